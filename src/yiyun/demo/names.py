"""Synthetic Chinese personal names.

Surnames are weighted by their share of the registered population (公安部户政管理研究
中心, 《二〇二〇年全国姓名报告》, top surnames; smaller ones rounded). Given names are
one or two characters drawn from pools typical of the holder's sex and birth decade:
names like 建国/秀英 for people born before the mid-1960s, 伟/丽 for the following
generation, 子轩/梓涵 for those born since the late 1990s.
"""

from __future__ import annotations

import random

__all__ = ["SURNAMES", "person_name"]

# (surname, share of population in per mille)
SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 71.5), ("李", 70.0), ("张", 66.0), ("刘", 54.0), ("陈", 46.0), ("杨", 31.0), ("黄", 24.0),
    ("赵", 22.0), ("吴", 20.0), ("周", 19.0), ("徐", 16.0), ("孙", 15.0), ("马", 15.0), ("朱", 13.0),
    ("胡", 13.0), ("郭", 12.0), ("何", 12.0), ("林", 11.0), ("罗", 11.0), ("高", 11.0), ("郑", 9.5),
    ("梁", 9.0), ("谢", 8.5), ("宋", 8.0), ("唐", 8.0), ("许", 7.0), ("韩", 7.0), ("邓", 6.5),
    ("冯", 6.5), ("曹", 6.0), ("彭", 6.0), ("曾", 5.5), ("肖", 5.5), ("田", 5.0), ("董", 5.0),
    ("潘", 4.5), ("袁", 4.5), ("蔡", 4.5), ("蒋", 4.5), ("余", 4.0), ("于", 4.0), ("杜", 4.0),
    ("叶", 4.0), ("程", 4.0), ("魏", 3.5), ("苏", 3.5), ("吕", 3.5), ("丁", 3.5), ("任", 3.5),
    ("卢", 3.0), ("姚", 3.0), ("沈", 3.0), ("钟", 3.0), ("姜", 3.0), ("崔", 3.0), ("谭", 3.0),
    ("陆", 2.8), ("范", 2.8), ("汪", 2.8), ("廖", 2.8), ("石", 2.7), ("金", 2.7), ("韦", 2.6),
    ("贾", 2.5), ("夏", 2.4), ("付", 2.4), ("方", 2.3), ("邹", 2.2), ("熊", 2.2), ("白", 2.1),
    ("孟", 2.1), ("秦", 2.0), ("邱", 2.0), ("侯", 2.0), ("江", 2.0), ("尹", 1.8), ("薛", 1.8),
    ("闫", 1.8), ("段", 1.7), ("雷", 1.7), ("龙", 1.6), ("黎", 1.6), ("史", 1.6), ("陶", 1.5),
    ("贺", 1.5), ("毛", 1.4), ("郝", 1.4), ("顾", 1.4), ("龚", 1.3), ("邵", 1.3), ("万", 1.3),
    ("覃", 1.2), ("武", 1.2), ("钱", 1.2), ("戴", 1.2), ("严", 1.1), ("莫", 1.1), ("孔", 1.0),
    ("向", 1.0), ("常", 1.0), ("欧阳", 0.4), ("司马", 0.05),
)

_POOLS: dict[tuple[str, str], tuple[str, str]] = {
    # (sex, generation): (first characters, second characters)
    ("male", "old"): ("建国志德永福长树春金文明海忠荣世正秋", "国华明军平强林生成民清才发富良福贵山"),
    ("male", "middle"): ("伟勇军磊涛斌鹏辉刚杰亮峰波浩俊建志海晓文宏振永立", "伟军华明峰涛杰辉鹏飞宇波斌龙刚亮强超"),
    ("male", "young"): ("子浩宇梓睿俊博一家铭辰泽皓天逸昊航晨嘉锦奕", "轩宇涵睿阳铭泽辰浩然航杰霖博文瑞熙帆"),
    ("female", "old"): ("秀桂玉淑凤兰英珍芳翠素美春冬梅月金", "英兰珍芳华梅莲琴云霞荣花凤娥秀香"),
    ("female", "middle"): ("丽娟敏静燕艳芳玲霞婷红慧晓雪丹洁颖琳倩莉", "娟丽敏静燕红霞婷华芳玲颖琳莉萍丹"),
    ("female", "young"): ("欣梓诗雨思可馨紫一若语嘉悦子佳依安沐", "怡涵萱琪妍彤瑶然菲琳悦晴宁淇雯璇"),
}

_SURNAME_CHOICES = [s for s, _ in SURNAMES]
_SURNAME_WEIGHTS = [w for _, w in SURNAMES]


def _generation(birth_year: int) -> str:
    if birth_year < 1965:
        return "old"
    if birth_year < 1995:
        return "middle"
    return "young"


def person_name(rng: random.Random, sex: str, birth_year: int) -> tuple[str, str]:
    """(family name, given name) for a person of `sex` ('male'/'female') born in `birth_year`."""
    family = rng.choices(_SURNAME_CHOICES, _SURNAME_WEIGHTS)[0]
    firsts, seconds = _POOLS[(sex, _generation(birth_year))]
    # Single-character given names were most common for people born in the 1970s–90s.
    single_share = 0.25 if 1970 <= birth_year < 2000 else 0.1
    if rng.random() < single_share:
        given = rng.choice(seconds)
    else:
        first = rng.choice(firsts)
        second = rng.choice(seconds)
        while second == first:
            second = rng.choice(seconds)
        given = first + second
    return family, given
