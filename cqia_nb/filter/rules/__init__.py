"""Rule filters, one family per module; each filter's docstring carries its calibration on the real data."""

from __future__ import annotations

from cqia_nb.filter.rules.answers import (  # noqa: F401
    NEVER_FINAL,
    NEVER_FINAL_WORDS,
    SIGN_OFFS,
    AnswerRepeatsQuestionFilter,
    TruncatedFilter,
    UnfinishedAnswerFilter,
    names_no_choice,
    unclosed_pair,
)
from cqia_nb.filter.rules.chars import (  # noqa: F401
    GARBAGE_SYMBOL,
    NORMAL_PUNCT,
    SPECIAL_CHAR,
    MojibakeFilter,
    NonChineseRatioFilter,
    SpecialCharsFilter,
    SymbolRunFilter,
    gbk_mojibake_chars,
)
from cqia_nb.filter.rules.clean import (  # noqa: F401
    DJ_EMAIL,
    DJ_EMAIL_PREFILTER,
    DJ_LINK,
    DJ_LINK_PREFILTER,
    RegexCleanTransform,
    replace_all,
)
from cqia_nb.filter.rules.common import (  # noqa: F401
    ALL_TEXT,
    FENCED_CODE,
    INLINE_CODE,
    TEXT_FIELDS,
    FieldSpec,
    PatternFilter,
    TextFilter,
    char_class,
    check_regex,
    escape_literal,
    fmt,
    parse_fields,
    series_of,
    text_expr,
)
from cqia_nb.filter.rules.contact import (  # noqa: F401
    EmailFilter,
    PhoneFilter,
    QQWechatFilter,
    UrlFilter,
)
from cqia_nb.filter.rules.kernels import (  # noqa: F401
    bmp_tables,
    class_mask,
    codepoints,
    ngram_keys,
    ngram_repeats,
    ngram_runs,
    per_text_sum,
    word_table,
    word_tokens,
)
from cqia_nb.filter.rules.length import (  # noqa: F401
    INVISIBLE,
    VISIBLE,
    EmptyOutputFilter,
    LengthFilter,
)
from cqia_nb.filter.rules.markup import (  # noqa: F401
    AdsFilter,
    HtmlFilter,
)
from cqia_nb.filter.rules.outliers import (  # noqa: F401
    PLACEHOLDERS,
    WEAK_PLACEHOLDERS,
    PlaceholderAnswerFilter,
    RepeatedTailFilter,
    ShortAnswerFilter,
    closed_request,
    tail_repeats,
)
from cqia_nb.filter.rules.repetition import (  # noqa: F401
    TOKEN,
    CharRepetitionFilter,
    ConsecutiveRepeatsFilter,
    NgramRepetitionFilter,
)
from cqia_nb.filter.rules.traditional import (  # noqa: F401
    ToSimplifiedTransform,
    TraditionalFilter,
    changeable_chars,
    convert_texts,
    traditional_share,
)
from cqia_nb.filter.rules.words import (  # noqa: F401
    FlaggedWordsFilter,
    read_words,
    shipped_words_file,
)
