"""Fixed content of the demo data set: region, facilities, departments, diagnoses, drugs.

Everything here is hand-picked; the generator only draws from it. Diagnosis codes are
copied from the national clinical edition 2.0 list shipped in ``yiyun/core/data`` and are
checked against it by :func:`check_catalogue` before every generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from yiyun.demo.reference import icd10_clinical

# All dates of the data set are relative to this day; it never depends on the clock.
REFERENCE_DATE = date(2026, 11, 1)
# Clinical history covers the two years before the reference date.
HISTORY_DAYS = 730

BASE = "https://yiyun.example.cn/fhir"
DRUG_CATALOGUE_SYSTEM = f"{BASE}/CodeSystem/drug-catalogue"


@dataclass(frozen=True)
class Region:
    province_code: str
    city_code: str
    # (west, south, east, north) in WGS-84 degrees.
    bbox: tuple[float, float, float, float]
    # County code → resident population, 10 000s, used to place patients.
    population: dict[str, int]
    phone_area_code: str


# 长沙市, 湖南省. Extent 东经111°53′–114°15′, 北纬27°51′–28°41′ (长沙市人民政府门户网站, 长沙概况).
# Populations rounded from the 长沙市第七次全国人口普查公报 (2021).
REGION = Region(
    province_code="43",
    city_code="4301",
    bbox=(111.88, 27.85, 114.25, 28.69),
    population={
        "430102": 63, "430103": 76, "430104": 152, "430105": 84, "430111": 137,
        "430112": 88, "430121": 138, "430181": 143, "430182": 126,
    },
    phone_area_code="0731",
)


@dataclass(frozen=True)
class Department:
    key: str
    name: str
    # Code in 《医疗机构诊疗科目名录》 (卫医发〔1994〕第27号 and later additions).
    subject_code: str
    # Offers online follow-up under 《互联网诊疗管理办法（试行）》 (国卫医发〔2018〕25号).
    online: bool = True


DEPARTMENTS: dict[str, Department] = {
    d.key: d
    for d in (
        Department("respiratory", "呼吸内科", "03.01"),
        Department("cardiology", "心血管内科", "03.04"),
        Department("gastroenterology", "消化内科", "03.02"),
        Department("endocrinology", "内分泌科", "03.07"),
        Department("neurology", "神经内科", "03.03"),
        Department("general-surgery", "普通外科", "04.01", online=False),
        Department("orthopaedics", "骨科", "04.03"),
        Department("obstetrics-gynaecology", "妇产科", "05"),
        Department("ophthalmology", "眼科", "10"),
        Department("dermatology", "皮肤科", "13"),
        Department("emergency", "急诊医学科", "20", online=False),
        Department("infectious", "感染性疾病科（发热门诊）", "16", online=False),
        Department("paediatrics", "儿科", "07"),
        Department("paediatric-surgery", "小儿外科", "08", online=False),
        Department("child-health", "儿童保健科", "09"),
        Department("internal-medicine", "内科", "03"),
        Department("stomatology", "口腔科", "12", online=False),
        Department("ent", "耳鼻咽喉科", "11"),
        Department("general-practice", "全科医疗科", "02"),
        Department("tcm", "中医科", "50"),
    )
}


@dataclass(frozen=True)
class Facility:
    slug: str
    name: str
    alias: str
    kind: str  # hospital | clinic | pharmacy | cdc
    grade: str | None  # 三级甲等 etc. for hospitals
    county_code: str
    township_code: str
    street: str
    departments: tuple[str, ...] = ()
    # Where a diagnosis with no matching department is seen.
    default_department: str | None = None
    # Staff: (department key or None, profession, count)
    staff: tuple[tuple[str | None, str, int], ...] = ()


FACILITIES: tuple[Facility, ...] = (
    Facility(
        "cs-central-hospital", "长沙医云示范中心医院", "示范中心医院", "hospital", "三级甲等",
        "430102", "430102001", "文艺路168号",
        departments=(
            "respiratory", "cardiology", "gastroenterology", "endocrinology", "neurology",
            "general-surgery", "orthopaedics", "obstetrics-gynaecology", "ophthalmology",
            "dermatology", "emergency", "infectious",
        ),
        default_department="emergency",
        staff=(
            ("respiratory", "doctor", 2), ("cardiology", "doctor", 2), ("gastroenterology", "doctor", 2),
            ("endocrinology", "doctor", 2), ("neurology", "doctor", 2), ("general-surgery", "doctor", 2),
            ("orthopaedics", "doctor", 2), ("obstetrics-gynaecology", "doctor", 2), ("ophthalmology", "doctor", 2),
            ("dermatology", "doctor", 2), ("emergency", "doctor", 2), ("infectious", "doctor", 2),
            ("respiratory", "nurse", 1), ("cardiology", "nurse", 1), ("endocrinology", "nurse", 1),
            ("emergency", "nurse", 1), ("infectious", "nurse", 1), ("obstetrics-gynaecology", "nurse", 1),
            (None, "pharmacist", 3),
        ),
    ),
    Facility(
        "cs-childrens-hospital", "长沙医云示范儿童医院", "示范儿童医院", "hospital", "三级甲等",
        "430111", "430111003", "劳动东路86号",
        departments=("paediatrics", "paediatric-surgery", "child-health"),
        default_department="paediatrics",
        staff=(
            ("paediatrics", "doctor", 3), ("paediatric-surgery", "doctor", 1), ("child-health", "doctor", 1),
            ("paediatrics", "nurse", 2), ("child-health", "nurse", 1),
            (None, "pharmacist", 1),
        ),
    ),
    Facility(
        "tianxin-district-hospital", "长沙市天心区示范人民医院", "天心区示范医院", "hospital", "二级甲等",
        "430103", "430103006", "书院路302号",
        departments=("internal-medicine", "stomatology", "ent"),
        default_department="internal-medicine",
        staff=(
            ("internal-medicine", "doctor", 3), ("stomatology", "doctor", 1), ("ent", "doctor", 1),
            ("internal-medicine", "nurse", 2), ("stomatology", "nurse", 1),
            (None, "pharmacist", 1),
        ),
    ),
    Facility(
        "wangyuehu-chc", "岳麓区望月湖街道示范社区卫生服务中心", "望月湖社区卫生服务中心", "clinic", None,
        "430104", "430104001", "望月湖路27号",
        departments=("general-practice", "tcm"),
        default_department="general-practice",
        staff=(
            ("general-practice", "doctor", 3), ("tcm", "doctor", 1),
            ("general-practice", "nurse", 2),
            (None, "pharmacist", 1),
        ),
    ),
    Facility(
        "furong-pharmacy", "医云示范大药房（芙蓉店）", "示范大药房", "pharmacy", None,
        "430102", "430102013", "蔡锷中路59号",
        staff=((None, "pharmacist", 2),),
    ),
    Facility(
        "cs-cdc", "长沙市示范疾病预防控制中心", "示范疾控中心", "cdc", None,
        "430105", "430105002", "营盘东路15号",
    ),
)


@dataclass(frozen=True)
class Drug:
    code: str
    name: str  # generic name, dosage form and strength as printed on a prescription
    drug_class: str  # drugs of one class are not prescribed twice to the same patient
    route: str  # key of ROUTES
    dose: float
    dose_unit: str  # UCUM
    dose_text: str
    frequency: int
    period: float = 1
    period_unit: str = "d"
    timing_code: str | None = "QD"  # v3-GTSAbbreviation
    # Pack units used per dose (tablets, capsules, sachets); None for devices, tubes, bottles.
    units_per_dose: float | None = 1
    pack_unit: tuple[str, str] = ("片", "{tbl}")  # (display, UCUM annotation)
    pack_quantity: int | None = None  # whole packs dispensed when units_per_dose is None
    as_needed: bool = False
    advice: str = ""
    # Longest supply on one prescription in days; class-II psychotropics: 7
    # (《处方管理办法》 第二十三/二十四条).
    max_days: int = 28


ROUTES = {
    # SNOMED CT route of administration (http://hl7.org/fhir/R4/valueset-route-codes.html)
    "oral": ("26643006", "Oral route", "口服"),
    "inhaled": ("447694001", "Respiratory tract route", "吸入"),
    "topical": ("6064005", "Topical route", "外用"),
    "eye": ("54485002", "Ophthalmic route", "滴眼"),
    "nasal": ("46713006", "Nasal route", "喷鼻"),
    "iv": ("47625008", "Intravenous route", "静脉滴注"),
    "vaginal": ("16857009", "Vaginal route", "阴道给药"),
}

_CAP = ("粒", "{capsule}")
_SACHET = ("袋", "{sachet}")
_DEVICE = ("支", "{device}")
_BOTTLE = ("瓶", "{bottle}")

DRUGS: dict[str, Drug] = {
    d.code: d
    for d in (
        # Antihypertensives (中国高血压防治指南 2018年修订版, first-line classes).
        Drug("D0101", "苯磺酸氨氯地平片 5mg", "ccb", "oral", 5, "mg", "一次5mg，一日1次", 1),
        Drug("D0102", "硝苯地平控释片 30mg", "ccb", "oral", 30, "mg", "一次30mg，一日1次", 1),
        Drug("D0103", "缬沙坦胶囊 80mg", "ras", "oral", 80, "mg", "一次80mg，一日1次", 1, pack_unit=_CAP),
        Drug("D0104", "厄贝沙坦片 150mg", "ras", "oral", 150, "mg", "一次150mg，一日1次", 1),
        Drug("D0106", "琥珀酸美托洛尔缓释片 47.5mg", "beta-blocker", "oral", 47.5, "mg", "一次47.5mg，一日1次", 1),
        Drug("D0107", "氢氯噻嗪片 25mg", "thiazide", "oral", 25, "mg", "一次25mg，一日1次", 1, advice="晨服"),
        # Glucose lowering (中国2型糖尿病防治指南 2020年版).
        Drug("D0201", "盐酸二甲双胍片 0.5g", "biguanide", "oral", 0.5, "g", "一次0.5g，一日3次", 3,
             timing_code="TID", advice="餐中或餐后服用"),
        Drug("D0202", "阿卡波糖片 50mg", "agi", "oral", 50, "mg", "一次50mg，一日3次", 3,
             timing_code="TID", advice="与第一口饭同时嚼服"),
        Drug("D0203", "格列美脲片 2mg", "sulfonylurea", "oral", 2, "mg", "一次2mg，一日1次", 1, advice="早餐前服用"),
        Drug("D0204", "磷酸西格列汀片 100mg", "dpp4", "oral", 100, "mg", "一次100mg，一日1次", 1),
        # Lipids (中国成人血脂异常防治指南 2016年修订版).
        Drug("D0301", "阿托伐他汀钙片 20mg", "statin", "oral", 20, "mg", "一次20mg，一日1次", 1, advice="睡前服用"),
        Drug("D0302", "瑞舒伐他汀钙片 10mg", "statin", "oral", 10, "mg", "一次10mg，一日1次", 1),
        # Antithrombotics, anti-anginal, heart failure.
        Drug("D0401", "阿司匹林肠溶片 100mg", "antiplatelet", "oral", 100, "mg", "一次100mg，一日1次", 1),
        Drug("D0402", "硫酸氢氯吡格雷片 75mg", "antiplatelet", "oral", 75, "mg", "一次75mg，一日1次", 1),
        Drug("D0403", "单硝酸异山梨酯缓释片 40mg", "nitrate", "oral", 40, "mg", "一次40mg，一日1次", 1),
        Drug("D0404", "利伐沙班片 20mg", "anticoagulant", "oral", 20, "mg", "一次20mg，一日1次", 1, advice="随餐服用"),
        Drug("D0405", "呋塞米片 20mg", "loop-diuretic", "oral", 20, "mg", "一次20mg，一日1次", 1, advice="晨服"),
        Drug("D0406", "螺内酯片 20mg", "mra", "oral", 20, "mg", "一次20mg，一日1次", 1),
        Drug("D0407", "沙库巴曲缬沙坦钠片 100mg", "ras", "oral", 100, "mg", "一次100mg，一日2次", 2, timing_code="BID"),
        # Airways (GOLD 2024; 支气管哮喘防治指南 2020年版).
        Drug("D0501", "沙美特罗替卡松粉吸入剂 50μg/250μg×60吸", "ics-laba", "inhaled", 1, "{puff}",
             "一次1吸，一日2次", 2, timing_code="BID", units_per_dose=None, pack_unit=_DEVICE, pack_quantity=1,
             advice="吸药后清水漱口"),
        Drug("D0502", "布地奈德福莫特罗粉吸入剂 160μg/4.5μg×60吸", "ics-laba", "inhaled", 1, "{puff}",
             "一次1吸，一日2次", 2, timing_code="BID", units_per_dose=None, pack_unit=_DEVICE, pack_quantity=1,
             advice="吸药后清水漱口"),
        Drug("D0503", "噻托溴铵粉吸入剂 18μg", "lama", "inhaled", 18, "ug", "一次18μg（1粒），一日1次", 1,
             pack_unit=_CAP),
        Drug("D0504", "孟鲁司特钠咀嚼片 4mg", "ltra", "oral", 4, "mg", "一次4mg，一日1次", 1, advice="睡前嚼服"),
        Drug("D0505", "孟鲁司特钠片 10mg", "ltra", "oral", 10, "mg", "一次10mg，一日1次", 1, advice="睡前服用"),
        Drug("D0506", "孟鲁司特钠咀嚼片 5mg", "ltra", "oral", 5, "mg", "一次5mg，一日1次", 1, advice="睡前嚼服"),
        # Stomach.
        Drug("D0601", "奥美拉唑肠溶胶囊 20mg", "ppi", "oral", 20, "mg", "一次20mg，一日2次", 2,
             timing_code="BID", pack_unit=_CAP, advice="早晚餐前服用", max_days=14),
        Drug("D0602", "雷贝拉唑钠肠溶片 10mg", "ppi", "oral", 10, "mg", "一次10mg，一日1次", 1,
             advice="早餐前服用", max_days=14),
        Drug("D0603", "铝碳酸镁咀嚼片 0.5g", "antacid", "oral", 1, "g", "一次1g（2片），一日3次", 3,
             timing_code="TID", units_per_dose=2, advice="餐后1～2小时嚼服", max_days=14),
        # Urate lowering (中国高尿酸血症与痛风诊疗指南 2019).
        Drug("D0701", "非布司他片 40mg", "urate-lowering", "oral", 40, "mg", "一次40mg，一日1次", 1),
        Drug("D0703", "苯溴马隆片 50mg", "urate-lowering", "oral", 50, "mg", "一次50mg，一日1次", 1,
             advice="早餐后服用，多饮水"),
        # Thyroid, bone.
        Drug("D0801", "左甲状腺素钠片 50μg", "thyroid", "oral", 50, "ug", "一次50μg，一日1次", 1,
             advice="早餐前半小时空腹服用"),
        Drug("D0901", "碳酸钙D3片 600mg", "calcium", "oral", 600, "mg", "一次600mg，一日1次", 1),
        Drug("D0902", "阿仑膦酸钠片 70mg", "bisphosphonate", "oral", 70, "mg", "一次70mg，每周1次", 1,
             period=1, period_unit="wk", timing_code=None, advice="晨起空腹用一满杯白水送服，服药后30分钟内保持上身直立"),
        Drug("D0903", "骨化三醇软胶囊 0.25μg", "vitamin-d", "oral", 0.25, "ug", "一次0.25μg，一日1次", 1,
             pack_unit=_CAP),
        # Joints, spine, pain.
        Drug("D1001", "塞来昔布胶囊 200mg", "nsaid", "oral", 200, "mg", "一次200mg，一日1次", 1,
             pack_unit=_CAP, max_days=14),
        Drug("D1002", "硫酸氨基葡萄糖胶囊 0.25g", "glucosamine", "oral", 0.5, "g", "一次0.5g（2粒），一日3次", 3,
             timing_code="TID", units_per_dose=2, pack_unit=_CAP),
        Drug("D1003", "双氯芬酸二乙胺乳胶剂 20g", "topical-nsaid", "topical", 1, "{application}",
             "外用，涂于患处，一日3次", 3, timing_code="TID", units_per_dose=None, pack_unit=_DEVICE,
             pack_quantity=1, max_days=14),
        Drug("D1701", "甲钴胺片 0.5mg", "vitamin-b12", "oral", 0.5, "mg", "一次0.5mg，一日3次", 3, timing_code="TID"),
        Drug("D1702", "洛索洛芬钠片 60mg", "nsaid", "oral", 60, "mg", "一次60mg，一日3次", 3,
             timing_code="TID", advice="餐后服用", max_days=7),
        # Urology, liver.
        Drug("D1101", "盐酸坦索罗辛缓释胶囊 0.2mg", "alpha-blocker", "oral", 0.2, "mg", "一次0.2mg，一日1次", 1,
             pack_unit=_CAP, advice="睡前服用"),
        Drug("D1102", "非那雄胺片 5mg", "5ari", "oral", 5, "mg", "一次5mg，一日1次", 1),
        Drug("D1201", "恩替卡韦分散片 0.5mg", "antiviral-hbv", "oral", 0.5, "mg", "一次0.5mg，一日1次", 1,
             advice="空腹服用（餐前或餐后至少2小时）"),
        Drug("D1301", "多烯磷脂酰胆碱胶囊 228mg", "hepatoprotective", "oral", 456, "mg", "一次456mg（2粒），一日3次", 3,
             timing_code="TID", units_per_dose=2, pack_unit=_CAP, advice="随餐服用"),
        # Sleep and mood; 右佐匹克隆 is a class-II psychotropic.
        Drug("D1402", "右佐匹克隆片 3mg", "hypnotic", "oral", 3, "mg", "一次3mg，睡前服用", 1,
             timing_code="HS", max_days=7),
        Drug("D1403", "盐酸舍曲林片 50mg", "ssri", "oral", 50, "mg", "一次50mg，一日1次", 1),
        Drug("D1404", "草酸艾司西酞普兰片 10mg", "ssri", "oral", 10, "mg", "一次10mg，一日1次", 1),
        # Allergy.
        Drug("D1501", "氯雷他定片 10mg", "antihistamine", "oral", 10, "mg", "一次10mg，一日1次", 1, max_days=14),
        Drug("D1502", "糠酸莫米松鼻喷雾剂 50μg×60揿", "nasal-steroid", "nasal", 2, "{spray}",
             "每侧鼻孔2揿，一日1次", 1, units_per_dose=None, pack_unit=_DEVICE, pack_quantity=1),
        # Blood, eyes, pregnancy.
        Drug("D1601", "多糖铁复合物胶囊 150mg", "iron", "oral", 150, "mg", "一次150mg，一日1次", 1, pack_unit=_CAP),
        Drug("D1801", "硫酸阿托品滴眼液 0.01% 0.4ml", "atropine-eye", "eye", 1, "{drop}",
             "每晚睡前双眼各1滴", 1, timing_code="HS", units_per_dose=None, pack_unit=("支", "{vial}"),
             pack_quantity=28),
        Drug("D1901", "叶酸片 0.4mg", "folate", "oral", 0.4, "mg", "一次0.4mg，一日1次", 1),
        Drug("D1902", "复方α-酮酸片 0.63g", "keto-acid", "oral", 2.52, "g", "一次2.52g（4片），一日3次", 3,
             timing_code="TID", units_per_dose=4, advice="用餐期间整片吞服"),
        # Acute treatments.
        Drug("A0001", "对乙酰氨基酚片 0.5g", "antipyretic", "oral", 0.5, "g",
             "发热时一次0.5g，间隔4～6小时可重复，24小时内不超过4次", 4, timing_code=None, as_needed=True, max_days=3),
        Drug("A0002", "布洛芬混悬液 100ml:2g", "antipyretic", "oral", 5, "mL",
             "发热时一次5ml，间隔6小时可重复，24小时内不超过4次", 4, timing_code=None, as_needed=True,
             units_per_dose=None, pack_unit=_BOTTLE, pack_quantity=1, max_days=3),
        Drug("A0003", "阿莫西林胶囊 0.5g", "penicillin", "oral", 0.5, "g", "一次0.5g，一日3次", 3,
             timing_code="TID", pack_unit=_CAP, max_days=7),
        Drug("A0004", "阿莫西林克拉维酸钾颗粒 228.5mg", "penicillin", "oral", 228.5, "mg", "一次1袋，一日2次", 2,
             timing_code="BID", pack_unit=_SACHET, max_days=7),
        Drug("A0005", "头孢呋辛酯片 0.25g", "cephalosporin", "oral", 0.25, "g", "一次0.25g，一日2次", 2,
             timing_code="BID", advice="餐后服用", max_days=7),
        Drug("A0006", "阿奇霉素干混悬剂 0.1g", "macrolide", "oral", 0.1, "g", "一次0.1g，一日1次，连用3日", 1,
             pack_unit=_SACHET, max_days=3),
        Drug("A0007", "左氧氟沙星片 0.5g", "quinolone", "oral", 0.5, "g", "一次0.5g，一日1次", 1, max_days=7),
        Drug("A0008", "注射用头孢曲松钠 1g", "cephalosporin", "iv", 2, "g", "一次2g，一日1次", 1,
             units_per_dose=2, pack_unit=("瓶", "{vial}"), max_days=7),
        Drug("A0009", "蒙脱石散 3g", "antidiarrhoeal", "oral", 3, "g", "一次1袋，一日3次，温水冲服", 3,
             timing_code="TID", pack_unit=_SACHET, max_days=3),
        Drug("A0010", "口服补液盐散（Ⅲ） 5.125g", "ors", "oral", 5.125, "g", "一次1袋，溶于250ml温开水，少量多次服用", 3,
             timing_code="TID", pack_unit=_SACHET, max_days=3),
        Drug("A0011", "磷酸奥司他韦胶囊 75mg", "neuraminidase", "oral", 75, "mg", "一次75mg，一日2次，连用5日", 2,
             timing_code="BID", pack_unit=_CAP, max_days=5),
        Drug("A0012", "连花清瘟胶囊 0.35g", "tcm-respiratory", "oral", 1.4, "g", "一次4粒，一日3次", 3,
             timing_code="TID", units_per_dose=4, pack_unit=_CAP, max_days=5),
        Drug("A0013", "小儿豉翘清热颗粒 2g", "tcm-respiratory", "oral", 2, "g", "一次1袋，一日3次，开水冲服", 3,
             timing_code="TID", pack_unit=_SACHET, max_days=3),
        Drug("A0014", "盐酸氨溴索口服溶液 100ml:0.6g", "mucolytic", "oral", 10, "mL", "一次10ml，一日3次", 3,
             timing_code="TID", units_per_dose=None, pack_unit=_BOTTLE, pack_quantity=1, max_days=7),
        Drug("A0015", "丁酸氢化可的松乳膏 10g:10mg", "topical-steroid", "topical", 1, "{application}",
             "外用，薄涂于患处，一日2次", 2, timing_code="BID", units_per_dose=None, pack_unit=_DEVICE,
             pack_quantity=1, max_days=14),
        Drug("A0016", "阿达帕林凝胶 0.1% 30g", "retinoid", "topical", 1, "{application}",
             "外用，每晚睡前薄涂于患处", 1, timing_code="HS", units_per_dose=None, pack_unit=_DEVICE,
             pack_quantity=1),
        Drug("A0017", "盐酸伐昔洛韦片 0.5g", "antiviral", "oral", 1, "g", "一次1g（2片），一日3次，连用7日", 3,
             timing_code="TID", units_per_dose=2, max_days=7),
        Drug("A0018", "左氧氟沙星滴眼液 0.5% 5ml", "eye-antibiotic", "eye", 1, "{drop}", "一次1滴，一日3次", 3,
             timing_code="TID", units_per_dose=None, pack_unit=_DEVICE, pack_quantity=1, max_days=7),
        Drug("A0019", "乳果糖口服溶液 100ml:66.7g", "laxative", "oral", 15, "mL", "一次15ml，一日1次", 1,
             units_per_dose=None, pack_unit=_BOTTLE, pack_quantity=1, max_days=7),
        Drug("A0020", "甲硝唑片 0.2g", "nitroimidazole", "oral", 0.4, "g", "一次0.4g（2片），一日3次", 3,
             timing_code="TID", units_per_dose=2, max_days=7),
        Drug("A0021", "甲硝唑阴道泡腾片 0.2g", "vaginal-anti-infective", "vaginal", 0.2, "g", "每晚1片，置于阴道深处",
             1, timing_code="HS", max_days=7),
        Drug("A0022", "琥珀酸亚铁片 0.1g", "iron", "oral", 0.1, "g", "一次0.1g，一日2次", 2, timing_code="BID"),
    )
}


@dataclass(frozen=True)
class Diagnosis:
    key: str
    code: str  # ICD-10 national clinical edition 2.0, exactly as listed
    name: str  # its name in that list
    departments: tuple[str, ...]
    # Drug regimens to choose from; each a tuple of drug codes.
    regimens: tuple[tuple[str, ...], ...] = ()
    # Long-term drugs renewed at every follow-up; otherwise a course at diagnosis only.
    maintenance: bool = False
    # "bacterial" | "viral" | None: drives temperature, WBC and CRP.
    infection: str | None = None
    # Lower-airway problems: respiratory rate and pulse oximetry are recorded.
    respiratory: bool = False
    # Laboratory panels (keys of LAB_PANELS) checked at diagnosis and, with the given
    # probability, at each in-person follow-up.
    labs: tuple[str, ...] = ()
    follow_up_lab_rate: float = 0.0
    # Share of episodes admitted as inpatients, by "child"/"adult"/"elderly".
    admission: dict[str, float] = field(default_factory=dict)
    # Seasonal profile key of SEASONS.
    season: str | None = None
    # Mean follow-up interval, days, for chronic conditions.
    follow_up_days: int = 60


D = Diagnosis
DIAGNOSES: dict[str, Diagnosis] = {
    d.key: d
    for d in (
        # ---- chronic conditions -------------------------------------------------------
        D("hypertension", "I10.x09", "原发性高血压", ("cardiology", "internal-medicine", "general-practice"),
          regimens=(("D0101",), ("D0102",), ("D0103",), ("D0104",), ("D0101", "D0104"), ("D0103", "D0107")),
          maintenance=True, labs=("renal", "lipids"), follow_up_lab_rate=0.15, follow_up_days=56),
        D("diabetes", "E11.900", "2型糖尿病", ("endocrinology", "internal-medicine", "general-practice"),
          regimens=(("D0201",), ("D0201", "D0202"), ("D0201", "D0203"), ("D0201", "D0204"), ("D0202",)),
          maintenance=True, labs=("glucose", "hba1c", "lipids", "renal"), follow_up_lab_rate=0.6,
          follow_up_days=56),
        D("hyperlipidaemia", "E78.500", "高脂血症", ("cardiology", "endocrinology", "internal-medicine", "general-practice"),
          regimens=(("D0301",), ("D0302",)), maintenance=True, labs=("lipids", "liver"), follow_up_lab_rate=0.3,
          follow_up_days=84),
        D("chd", "I25.103", "冠状动脉粥样硬化性心脏病", ("cardiology", "internal-medicine", "general-practice"),
          regimens=(("D0401", "D0301", "D0106"), ("D0401", "D0302"), ("D0401", "D0403", "D0301")),
          maintenance=True, labs=("lipids",), follow_up_lab_rate=0.2, admission={"elderly": 0.15},
          follow_up_days=56),
        D("copd", "J44.900", "慢性阻塞性肺病", ("respiratory", "internal-medicine", "general-practice"),
          regimens=(("D0503",), ("D0502",), ("D0501", "D0503")), maintenance=True, respiratory=True,
          labs=("cbc",), follow_up_lab_rate=0.1, follow_up_days=84),
        D("asthma", "J45.900x001", "支气管哮喘", ("respiratory", "paediatrics", "internal-medicine", "general-practice"),
          regimens=(("D0502",), ("D0501",)), maintenance=True, respiratory=True, follow_up_days=84),
        D("chronic-gastritis", "K29.500", "慢性胃炎", ("gastroenterology", "internal-medicine", "general-practice", "tcm"),
          regimens=(("D0601",), ("D0602",), ("D0603",), ("D0602", "D0603")), follow_up_days=120),
        D("knee-oa", "M17.900", "膝关节病", ("orthopaedics", "internal-medicine", "general-practice", "tcm"),
          regimens=(("D1001",), ("D1002",), ("D1003",)), follow_up_days=120),
        D("hyperuricaemia", "E79.001", "高尿酸血症", ("endocrinology", "internal-medicine", "general-practice"),
          regimens=(("D0701",), ("D0703",)), maintenance=True, labs=("urate", "renal"), follow_up_lab_rate=0.4,
          follow_up_days=84),
        D("gout", "M10.900", "痛风", ("endocrinology", "orthopaedics", "internal-medicine", "general-practice"),
          regimens=(("D0701",),), maintenance=True, labs=("urate", "renal"), follow_up_lab_rate=0.4,
          follow_up_days=84),
        D("osteoporosis", "M81.900", "骨质疏松", ("orthopaedics", "endocrinology", "internal-medicine", "general-practice"),
          regimens=(("D0901", "D0902"), ("D0901", "D0903")), maintenance=True, follow_up_days=112),
        D("ckd3", "N18.803", "慢性肾脏病3期", ("internal-medicine", "endocrinology", "general-practice"),
          regimens=(("D0104", "D1902"), ("D0103",)), maintenance=True, labs=("renal", "cbc"),
          follow_up_lab_rate=0.6, follow_up_days=84),
        D("hypothyroidism", "E03.900", "甲状腺功能减退症", ("endocrinology", "internal-medicine", "general-practice"),
          regimens=(("D0801",),), maintenance=True, labs=("thyroid",), follow_up_lab_rate=0.5, follow_up_days=112),
        D("bph", "N40.x00", "前列腺增生", ("general-surgery", "internal-medicine", "general-practice"),
          regimens=(("D1101",), ("D1101", "D1102")), maintenance=True, follow_up_days=112),
        D("stroke", "I63.900", "脑梗死", ("neurology", "internal-medicine", "general-practice"),
          regimens=(("D0401", "D0301"), ("D0402", "D0302")), maintenance=True, labs=("lipids", "glucose"),
          follow_up_lab_rate=0.2, admission={"adult": 1.0, "elderly": 1.0}, follow_up_days=84),
        D("af", "I48.x01", "心房颤动", ("cardiology", "internal-medicine", "general-practice"),
          regimens=(("D0404", "D0106"),), maintenance=True, labs=("renal",), follow_up_lab_rate=0.2,
          follow_up_days=84),
        D("heart-failure", "I50.908", "慢性心力衰竭", ("cardiology", "internal-medicine", "general-practice"),
          regimens=(("D0405", "D0406", "D0106"), ("D0407", "D0406", "D0106")), maintenance=True,
          labs=("renal",), follow_up_lab_rate=0.4, admission={"elderly": 0.4}, follow_up_days=42),
        D("hepatitis-b", "B18.107", "慢性乙型病毒性肝炎", ("infectious", "gastroenterology", "internal-medicine", "general-practice"),
          regimens=(("D1201",),), maintenance=True, labs=("liver",), follow_up_lab_rate=0.5, follow_up_days=112),
        D("fatty-liver", "K76.000", "脂肪肝", ("gastroenterology", "internal-medicine", "general-practice"),
          regimens=((), ("D1301",)), labs=("liver", "lipids"), follow_up_lab_rate=0.3, follow_up_days=168),
        D("anxiety", "F41.101", "焦虑状态", ("neurology", "internal-medicine", "general-practice"),
          regimens=(("D1403",), ("D1404",)), maintenance=True, follow_up_days=42),
        D("insomnia", "G47.000x001", "失眠", ("neurology", "tcm", "internal-medicine", "general-practice"),
          regimens=(("D1402",),), follow_up_days=84),
        D("allergic-rhinitis", "J30.400x001", "过敏性鼻炎[变应性鼻炎]", ("ent", "paediatrics", "respiratory", "general-practice"),
          regimens=(("D1501", "D1502"), ("D1502",), ("D1501",)), season="pollen", follow_up_days=180),
        D("cervical-spondylosis", "M47.900x021", "颈椎病", ("orthopaedics", "tcm", "internal-medicine", "general-practice"),
          regimens=(("D1702", "D1701"), ("D1701",)), follow_up_days=150),
        D("lumbar-disc", "M51.202", "腰椎间盘突出", ("orthopaedics", "tcm", "internal-medicine", "general-practice"),
          regimens=(("D1702", "D1701"), ("D1001",)), follow_up_days=150),
        D("cataract", "H26.900", "白内障", ("ophthalmology", "internal-medicine", "general-practice"),
          follow_up_days=180),
        D("myopia", "H52.100", "近视", ("child-health", "ophthalmology", "paediatrics", "general-practice"),
          regimens=(("D1801",), ()), maintenance=True, follow_up_days=90),
        D("iron-deficiency-anaemia", "D50.900", "缺铁性贫血", ("paediatrics", "internal-medicine", "obstetrics-gynaecology", "general-practice"),
          regimens=(("D1601",),), maintenance=True, labs=("cbc",), follow_up_lab_rate=0.7, follow_up_days=42),
        D("thyroid-nodule", "E04.101", "甲状腺结节", ("endocrinology", "general-surgery", "internal-medicine", "general-practice"),
          labs=("thyroid",), follow_up_lab_rate=0.3, follow_up_days=180),
        D("atopic-dermatitis", "L20.900", "特应性皮炎", ("dermatology", "paediatrics", "general-practice"),
          regimens=(("A0015",),), follow_up_days=90),
        # ---- acute problems --------------------------------------------------------------
        D("urti", "J06.900", "急性上呼吸道感染", ("infectious", "paediatrics", "internal-medicine", "general-practice"),
          regimens=(("A0001",), ("A0012",), ("A0001", "A0012")), infection="viral", season="respiratory"),
        D("pharyngitis", "J02.900", "急性咽炎", ("ent", "paediatrics", "internal-medicine", "general-practice"),
          regimens=((), ("A0012",)), infection="viral", season="respiratory"),
        D("tonsillitis", "J03.900", "急性扁桃体炎", ("ent", "paediatrics", "internal-medicine", "general-practice"),
          regimens=(("A0003",), ("A0005",)), infection="bacterial", labs=("cbc", "crp"), season="respiratory"),
        D("bronchitis", "J20.900", "急性支气管炎", ("respiratory", "paediatrics", "internal-medicine", "general-practice"),
          regimens=(("A0014",), ("A0014", "A0005")), infection="viral", respiratory=True, labs=("cbc", "crp"),
          season="respiratory"),
        D("influenza", "J11.101", "流行性感冒", ("infectious", "paediatrics", "internal-medicine", "general-practice"),
          regimens=(("A0011",), ("A0011", "A0001")), infection="viral", respiratory=True, labs=("cbc",),
          season="influenza"),
        D("cap", "J15.902", "社区获得性肺炎，非重症", ("respiratory", "internal-medicine", "general-practice"),
          regimens=(("A0005",), ("A0003",)), infection="bacterial", respiratory=True, labs=("cbc", "crp"),
          admission={"adult": 0.25, "elderly": 0.6}, season="respiratory"),
        D("bronchopneumonia", "J18.000", "支气管肺炎", ("paediatrics", "general-practice"),
          regimens=(("A0004",), ("A0006",)), infection="bacterial", respiratory=True, labs=("cbc", "crp"),
          admission={"child": 0.35}, season="respiratory"),
        D("hfmd", "B08.401", "手足口病", ("paediatrics", "infectious", "general-practice"),
          regimens=((), ("A0002",)), infection="viral", labs=("cbc",), season="hfmd"),
        D("herpangina", "B08.501", "疱疹性咽峡炎", ("paediatrics", "general-practice"),
          regimens=(("A0002",),), infection="viral", season="hfmd"),
        D("gastroenteritis", "K52.905", "急性胃肠炎", ("gastroenterology", "emergency", "paediatrics", "internal-medicine", "general-practice"),
          regimens=(("A0009",), ("A0009", "A0010")), infection="viral", labs=("cbc",), season="summer"),
        D("infant-diarrhoea", "A09.903", "婴儿腹泻", ("paediatrics", "general-practice"),
          regimens=(("A0009", "A0010"),), infection="viral", season="winter-diarrhoea"),
        D("uti", "N39.000", "泌尿道感染", ("internal-medicine", "obstetrics-gynaecology", "emergency", "general-practice"),
          regimens=(("A0007",), ("A0005",)), infection="bacterial", labs=("cbc",)),
        D("dyspepsia", "K30.x00", "消化不良", ("gastroenterology", "tcm", "internal-medicine", "general-practice"),
          regimens=(("D0603",),)),
        D("constipation", "K59.000", "便秘", ("gastroenterology", "tcm", "internal-medicine", "general-practice"),
          regimens=(("A0019",),)),
        D("eczema", "L30.902", "湿疹", ("dermatology", "paediatrics", "general-practice"),
          regimens=(("A0015",),)),
        D("urticaria", "L50.900", "荨麻疹", ("dermatology", "paediatrics", "general-practice"),
          regimens=(("D1501",),)),
        D("acne", "L70.900", "痤疮", ("dermatology", "general-practice"), regimens=(("A0016",),)),
        D("zoster", "B02.900", "带状疱疹不伴有并发症", ("dermatology", "internal-medicine", "general-practice"),
          regimens=(("A0017",),), infection="viral"),
        D("conjunctivitis", "H10.900", "结膜炎", ("ophthalmology", "paediatrics", "general-practice"),
          regimens=(("A0018",),)),
        D("otitis-media", "H66.900", "中耳炎", ("ent", "paediatrics", "general-practice"),
          regimens=(("A0004",), ("A0003",)), infection="bacterial"),
        D("dental-caries", "K02.900x001", "龋病", ("stomatology", "general-practice")),
        D("periodontitis", "K05.300", "慢性牙周炎", ("stomatology", "general-practice"), regimens=(("A0020",), ())),
        D("low-back-pain", "M54.502", "腰痛", ("orthopaedics", "tcm", "internal-medicine", "general-practice"),
          regimens=(("D1702",),)),
        D("frozen-shoulder", "M75.001", "肩周炎", ("orthopaedics", "tcm", "general-practice"), regimens=(("D1702",),)),
        D("ankle-sprain", "S93.401", "踝关节扭伤", ("orthopaedics", "emergency", "paediatric-surgery", "general-practice"),
          regimens=(("D1003",), ())),
        D("forearm-fracture", "S52.500x001", "桡骨远端骨折", ("orthopaedics", "emergency", "paediatric-surgery", "general-practice"),
          admission={"child": 0.3, "adult": 0.3, "elderly": 0.6}),
        D("appendicitis", "K35.900", "急性阑尾炎", ("general-surgery", "paediatric-surgery", "emergency", "internal-medicine"),
          infection="bacterial", labs=("cbc", "crp"), admission={"child": 1.0, "adult": 1.0, "elderly": 1.0}),
        D("inguinal-hernia", "K40.901", "腹股沟斜疝", ("general-surgery", "paediatric-surgery", "internal-medicine"),
          admission={"child": 0.8, "adult": 0.8, "elderly": 0.8}),
        D("vaginitis", "N76.000x001", "阴道炎", ("obstetrics-gynaecology", "general-practice"), regimens=(("A0021",),)),
        D("migraine", "G43.900", "偏头痛", ("neurology", "internal-medicine", "general-practice"), regimens=(("D1702",),)),
        D("dizziness", "R42.x00x004", "头晕", ("neurology", "internal-medicine", "general-practice", "tcm")),
        D("fever", "R50.900", "发热", ("infectious", "emergency", "paediatrics", "general-practice"),
          regimens=(("A0001",),), infection="viral", labs=("cbc", "crp"), season="respiratory"),
        # ---- visits without illness ------------------------------------------------------
        D("checkup", "Z00.001", "健康查体", ("internal-medicine", "general-practice", "endocrinology", "child-health"),
          labs=("glucose", "lipids", "liver", "renal", "urate", "cbc")),
        D("pregnancy", "Z34.900", "正常妊娠监督", ("obstetrics-gynaecology", "general-practice"),
          regimens=(("D1901",),), labs=("cbc", "glucose"), follow_up_lab_rate=0.5, follow_up_days=28),
        D("child-health-check", "Z00.100", "儿童常规健康检查", ("child-health", "paediatrics", "general-practice")),
    )
}

# Month weights (January first) for dates of seasonal problems. Profiles follow the
# seasonality reported by China CDC surveillance: influenza peaks in winter in southern
# provinces, hand-foot-mouth disease in April–July with a smaller autumn peak, rotavirus
# diarrhoea in infants in autumn–winter, allergic rhinitis in spring.
SEASONS: dict[str, tuple[float, ...]] = {
    "respiratory": (1.6, 1.4, 1.2, 0.9, 0.7, 0.6, 0.6, 0.6, 0.8, 0.9, 1.2, 1.6),
    "influenza": (2.6, 1.8, 1.0, 0.5, 0.3, 0.3, 0.4, 0.4, 0.3, 0.4, 0.8, 2.2),
    "hfmd": (0.3, 0.3, 0.6, 1.3, 2.1, 2.0, 1.2, 0.7, 0.9, 1.1, 0.8, 0.4),
    "summer": (0.6, 0.6, 0.7, 0.9, 1.2, 1.4, 1.6, 1.5, 1.1, 0.9, 0.7, 0.6),
    "winter-diarrhoea": (1.8, 1.4, 0.9, 0.6, 0.5, 0.5, 0.5, 0.5, 0.6, 1.0, 1.6, 2.0),
    "pollen": (0.7, 1.0, 1.8, 2.0, 1.4, 0.8, 0.6, 0.7, 1.2, 1.1, 0.7, 0.6),
}

# Chronic conditions by age band: (key, sex, [(min_age, prevalence), ...]) where the last
# band whose min_age ≤ age applies. Sex "male"/"female" limits a row; None applies to both.
# Figures approximate published Chinese prevalence of diagnosed disease among patients:
# hypertension from the China Hypertension Survey 2012–2015 (Wang Z et al., Circulation
# 2018;137:2344), diabetes from Li Y et al. (BMJ 2020;369:m997), COPD from the China
# Pulmonary Health study (Wang C et al., Lancet 2018;391:1706), asthma from Huang K et al.
# (Lancet 2019;394:407) and the third national survey of childhood asthma (3.0 %).
CHRONIC_PREVALENCE: tuple[tuple[str, str | None, tuple[tuple[int, float], ...]], ...] = (
    ("hypertension", None, ((18, 0.04), (25, 0.06), (35, 0.15), (45, 0.29), (55, 0.44), (65, 0.55), (75, 0.60))),
    ("diabetes", None, ((18, 0.02), (30, 0.05), (40, 0.09), (50, 0.14), (60, 0.19), (70, 0.21))),
    ("hyperlipidaemia", None, ((18, 0.03), (35, 0.08), (45, 0.13), (55, 0.17), (65, 0.19))),
    ("chd", "male", ((45, 0.02), (55, 0.05), (65, 0.10), (75, 0.15))),
    ("chd", "female", ((45, 0.01), (55, 0.03), (65, 0.07), (75, 0.12))),
    ("copd", "male", ((40, 0.03), (50, 0.06), (60, 0.11), (70, 0.16))),
    ("copd", "female", ((40, 0.01), (50, 0.03), (60, 0.05), (70, 0.08))),
    ("asthma", None, ((3, 0.03), (15, 0.02), (60, 0.03))),
    ("chronic-gastritis", None, ((18, 0.04), (40, 0.07), (60, 0.08))),
    ("knee-oa", "female", ((45, 0.06), (55, 0.12), (65, 0.18))),
    ("knee-oa", "male", ((45, 0.03), (55, 0.07), (65, 0.11))),
    ("hyperuricaemia", "male", ((20, 0.04), (40, 0.05), (60, 0.04))),
    ("hyperuricaemia", "female", ((45, 0.02), (60, 0.03))),
    ("gout", "male", ((25, 0.01), (40, 0.02), (60, 0.025))),
    ("osteoporosis", "female", ((50, 0.06), (60, 0.14), (70, 0.22))),
    ("osteoporosis", "male", ((65, 0.03), (75, 0.07))),
    ("ckd3", None, ((50, 0.01), (65, 0.03), (75, 0.05))),
    ("hypothyroidism", "female", ((18, 0.015), (40, 0.025), (60, 0.03))),
    ("hypothyroidism", "male", ((40, 0.005),)),
    ("bph", "male", ((50, 0.10), (60, 0.20), (70, 0.30))),
    ("stroke", None, ((50, 0.01), (60, 0.025), (70, 0.045), (80, 0.06))),
    ("af", None, ((60, 0.01), (70, 0.025), (80, 0.04))),
    ("heart-failure", None, ((60, 0.008), (70, 0.02), (80, 0.04))),
    ("hepatitis-b", None, ((18, 0.015), (30, 0.02), (60, 0.012))),
    ("fatty-liver", None, ((25, 0.04), (40, 0.07), (60, 0.05))),
    ("anxiety", None, ((18, 0.015), (40, 0.02), (65, 0.015))),
    ("insomnia", None, ((30, 0.015), (50, 0.03), (65, 0.04))),
    ("allergic-rhinitis", None, ((4, 0.05), (18, 0.04), (50, 0.02))),
    ("cervical-spondylosis", None, ((30, 0.02), (45, 0.04), (60, 0.05))),
    ("lumbar-disc", None, ((25, 0.015), (40, 0.03), (65, 0.025))),
    ("cataract", None, ((55, 0.02), (65, 0.06), (75, 0.14))),
    ("myopia", None, ((6, 0.08), (12, 0.15), (18, 0.0))),
    ("iron-deficiency-anaemia", None, ((1, 0.03), (6, 0.01), (15, 0.0))),
    ("iron-deficiency-anaemia", "female", ((15, 0.03), (50, 0.005))),
    ("thyroid-nodule", "female", ((25, 0.025), (45, 0.04), (65, 0.03))),
    ("thyroid-nodule", "male", ((35, 0.01),)),
    ("atopic-dermatitis", None, ((0, 0.04), (6, 0.02), (12, 0.0))),
)

# Acute problems by age group: relative weights of the reason for one episode.
ACUTE_MIX: dict[str, tuple[tuple[str, float], ...]] = {
    "infant": (  # under 3
        ("urti", 30), ("bronchitis", 8), ("bronchopneumonia", 6), ("hfmd", 7), ("herpangina", 5),
        ("infant-diarrhoea", 8), ("eczema", 8), ("fever", 6), ("otitis-media", 2), ("conjunctivitis", 2),
        ("urticaria", 2), ("influenza", 3),
    ),
    "child": (  # 3–13
        ("urti", 30), ("pharyngitis", 5), ("tonsillitis", 7), ("bronchitis", 7), ("bronchopneumonia", 4),
        ("influenza", 6), ("hfmd", 5), ("herpangina", 3), ("gastroenteritis", 5), ("eczema", 3),
        ("urticaria", 3), ("conjunctivitis", 3), ("otitis-media", 3), ("dental-caries", 5), ("fever", 4),
        ("forearm-fracture", 1.5), ("ankle-sprain", 1.5), ("appendicitis", 0.6), ("inguinal-hernia", 0.6),
    ),
    "adult": (  # 14–59
        ("urti", 20), ("pharyngitis", 6), ("tonsillitis", 3), ("bronchitis", 5), ("influenza", 5),
        ("cap", 2), ("gastroenteritis", 6), ("dyspepsia", 4), ("constipation", 2), ("uti", 3),
        ("eczema", 3), ("urticaria", 3), ("acne", 3), ("conjunctivitis", 2), ("dental-caries", 4),
        ("periodontitis", 3), ("low-back-pain", 4), ("frozen-shoulder", 1.5), ("ankle-sprain", 2),
        ("migraine", 2), ("dizziness", 2), ("zoster", 1), ("appendicitis", 0.8), ("inguinal-hernia", 0.5),
        ("vaginitis", 3), ("fever", 2), ("forearm-fracture", 0.5),
    ),
    "elderly": (  # 60 and over
        ("urti", 14), ("bronchitis", 7), ("cap", 6), ("influenza", 3), ("gastroenteritis", 4),
        ("dyspepsia", 4), ("constipation", 5), ("uti", 4), ("eczema", 2), ("urticaria", 1),
        ("zoster", 3), ("periodontitis", 3), ("low-back-pain", 5), ("frozen-shoulder", 2),
        ("dizziness", 5), ("conjunctivitis", 1), ("forearm-fracture", 1), ("inguinal-hernia", 0.6),
        ("fever", 2),
    ),
}


@dataclass(frozen=True)
class LabTest:
    key: str
    loinc: str
    display: str  # LOINC long common name
    text: str  # Chinese name shown to users
    unit: str  # UCUM
    unit_display: str
    decimals: int


# Chinese laboratories report SI units, so analytes with both mass and molar LOINC codes
# use the molar (mmol/L, μmol/L) code that matches the value.
LAB_TESTS: dict[str, LabTest] = {
    t.key: t
    for t in (
        LabTest("glucose", "14771-0", "Glucose [Moles/volume] in Serum or Plasma --fasting", "空腹血糖",
                "mmol/L", "mmol/L", 1),
        LabTest("hba1c", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "糖化血红蛋白", "%", "%", 1),
        LabTest("tc", "14647-2", "Cholesterol [Moles/volume] in Serum or Plasma", "总胆固醇", "mmol/L", "mmol/L", 2),
        LabTest("tg", "14927-8", "Triglyceride [Moles/volume] in Serum or Plasma", "甘油三酯", "mmol/L", "mmol/L", 2),
        LabTest("ldl", "22748-8", "Cholesterol in LDL [Moles/volume] in Serum or Plasma", "低密度脂蛋白胆固醇",
                "mmol/L", "mmol/L", 2),
        LabTest("hdl", "14646-4", "Cholesterol in HDL [Moles/volume] in Serum or Plasma", "高密度脂蛋白胆固醇",
                "mmol/L", "mmol/L", 2),
        LabTest("alt", "1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
                "丙氨酸氨基转移酶", "U/L", "U/L", 0),
        LabTest("creatinine", "14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "肌酐", "umol/L", "μmol/L", 0),
        LabTest("egfr", "62238-1",
                "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood by "
                "Creatinine-based formula (CKD-EPI)", "估算肾小球滤过率", "mL/min/{1.73_m2}", "mL/min/1.73m²", 0),
        LabTest("urate", "14933-6", "Urate [Moles/volume] in Serum or Plasma", "尿酸", "umol/L", "μmol/L", 0),
        LabTest("wbc", "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "白细胞计数",
                "10*9/L", "×10⁹/L", 2),
        LabTest("hb", "718-7", "Hemoglobin [Mass/volume] in Blood", "血红蛋白", "g/L", "g/L", 0),
        LabTest("crp", "1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "C反应蛋白", "mg/L", "mg/L", 1),
        LabTest("tsh", "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "促甲状腺激素",
                "m[IU]/L", "mIU/L", 2),
    )
}

LAB_PANELS: dict[str, tuple[str, ...]] = {
    "glucose": ("glucose",),
    "hba1c": ("hba1c",),
    "lipids": ("tc", "tg", "ldl", "hdl"),
    "liver": ("alt",),
    "renal": ("creatinine", "egfr"),
    "urate": ("urate",),
    "cbc": ("wbc", "hb"),
    "crp": ("crp",),
    "thyroid": ("tsh",),
}


def check_catalogue() -> None:
    """Fail loudly if a diagnosis code or name is not exactly in the shipped ICD-10 list."""
    icd = icd10_clinical()
    for d in DIAGNOSES.values():
        if icd.get(d.code) != d.name:
            raise ValueError(f"{d.key}: {d.code} {d.name} is not in the national clinical edition 2.0")
        for regimen in d.regimens:
            for code in regimen:
                if code not in DRUGS:
                    raise ValueError(f"{d.key}: unknown drug {code}")
        for dept in d.departments:
            if dept not in DEPARTMENTS:
                raise ValueError(f"{d.key}: unknown department {dept}")
        for panel in d.labs:
            if panel not in LAB_PANELS:
                raise ValueError(f"{d.key}: unknown lab panel {panel}")
