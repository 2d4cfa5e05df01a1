name_en2zh = {
    "chinese_food_culture": "中国饮食文化",
    "elementary_mathematics": "初等数学"
}

subcategories = {
    "chinese_food_culture": [
        "culture"
    ],
    "elementary_mathematics": [
        "math"
    ]
}

categories = {
    "STEM": [
        "math"
    ],
    "Social Science": [
        "culture"
    ]
}
