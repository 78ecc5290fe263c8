"""The national clinical edition 2.0 ICD-10 code list (国家临床版2.0疾病诊断编码).

The product ships the list under `yiyun/core/data/`; a development checkout may instead
point at the staged copy (`YIYUN_ICD10_CLINICAL_CSV`, or /work/shared/data). Codes are
stripped of surrounding whitespace (the upstream list has a few padded cells).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from functools import lru_cache
from pathlib import Path

import yiyun.core

_CORE_DATA = Path(yiyun.core.__file__).parent / "data"
_STAGED = Path("/work/shared/data/codes/icd10-clinical-v2/icd10_clinical_v2.csv")


def locate() -> Path | None:
    env = os.environ.get("YIYUN_ICD10_CLINICAL_CSV")
    if env and Path(env).exists():
        return Path(env)
    if _CORE_DATA.is_dir():
        for pattern in ("**/icd10*clinical*.csv", "**/icd10*clinical*.csv.gz", "**/icd10*.csv"):
            found = sorted(_CORE_DATA.glob(pattern))
            if found:
                return found[0]
    if _STAGED.exists():
        return _STAGED
    return None


def _open(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8-sig", newline="")


@lru_cache(maxsize=1)
def code_names() -> dict[str, str]:
    path = locate()
    if path is None:
        raise FileNotFoundError(
            "找不到国家临床版2.0 ICD-10 编码表（应随产品位于 yiyun/core/data/，"
            "或以 YIYUN_ICD10_CLINICAL_CSV 指定）"
        )
    out: dict[str, str] = {}
    with _open(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header and header[0].strip().lower() not in ("code", "疾病诊断编码"):
            out[header[0].strip()] = header[1].strip() if len(header) > 1 else ""
        for row in reader:
            if row and row[0].strip():
                out[row[0].strip()] = row[1].strip() if len(row) > 1 else ""
    return out


def codes() -> set[str]:
    return set(code_names())


def name_of(code: str) -> str | None:
    try:
        return code_names().get(code.strip())
    except FileNotFoundError:
        return None
