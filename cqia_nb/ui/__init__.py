"""Widgets and figures beside the pipeline: they read frames (and the decision logs of ``cqia_nb.core``),
never a pipeline stage, and every dataset value they show is HTML-escaped."""

from __future__ import annotations

from cqia_nb.ui.browser import (  # noqa: F401
    ANY,
    DEFAULT_FIELDS,
    PAGE_SIZES,
    TASK_TYPE_COLUMNS,
    BrowserQuery,
    DatasetBrowser,
    browse,
    filter_frame,
    page_count,
    page_of,
)
from cqia_nb.ui.common import (  # noqa: F401
    LONG_TEXT_COLUMNS,
    PRE_STYLE,
    PREVIEW_CHARS,
    PROVENANCE_COLUMNS,
    SCHEMA_COLUMNS,
    Displayable,
    esc,
    render_page_html,
    render_record_html,
    to_text,
)
from cqia_nb.ui.eval_plots import (  # noqa: F401
    base_vs_tuned_bars,
    class_radar,
    plot_accuracy,
    subset_bars,
)
from cqia_nb.ui.pairwise import (  # noqa: F401
    PairwiseQueue,
)
from cqia_nb.ui.plots import (  # noqa: F401
    TEXT_FIELDS,
    card_vs_copy_bar,
    counts_bar,
    domain_treemap,
    figures_dir,
    filter_histogram,
    length_box,
    origin_heatmap,
    save_figure,
    steps_funnel,
    task_sunburst,
)
from cqia_nb.ui.review import (  # noqa: F401
    COMMANDS,
    QueueCursor,
    ReviewQueue,
)
from cqia_nb.ui.sweep_plots import (  # noqa: F401
    sweep_heatmap,
    sweep_ranking,
    sweep_seeds,
)
from cqia_nb.ui.training import (  # noqa: F401
    LivePlot,
    comparison_html,
    training_figure,
)
from cqia_nb.ui.tuner import (  # noqa: F401
    DIRECTIONS,
    UNION,
    ThresholdTuner,
    drop_label,
    figure_widget_available,
    histogram,
    infer_threshold,
    normalize_direction,
    would_drop,
)
