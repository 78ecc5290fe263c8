import hashlib

import pytest

from yiyun.demo import reference
from yiyun.demo.catalogue import DIAGNOSES, FACILITIES, REGION, check_catalogue
from yiyun.demo.identifiers import organization_code, uscc_check


def test_changsha_divisions_are_shipped():
    assert reference.province("43").name == "湖南省"
    assert reference.city("4301").name == "长沙市"
    names = {c.code: c.name for c in reference.counties("4301")}
    assert names["430104"] == "岳麓区" and names["430182"] == "宁乡市"
    assert set(names) == set(REGION.population)
    yuelu = {t.code: t.name for t in reference.townships("430104")}
    assert yuelu["430104001"] == "望月湖街道"
    assert all(int(code[6:]) < 400 for code in yuelu)


def test_every_county_has_a_centre_including_renamed_ones():
    for county in reference.counties("4301"):
        lon, lat = reference.county_centre_gcj02(county.code)
        assert 111 < lon < 115 and 27 < lat < 29
    assert reference.county_centre_gcj02("430182") == reference.county_centre_gcj02("430124")


def test_facilities_sit_in_real_townships():
    for f in FACILITIES:
        codes = {t.code for t in reference.townships(f.county_code)}
        assert f.township_code in codes


def test_icd10_list_is_complete_and_catalogue_matches_it():
    icd = reference.icd10_clinical()
    assert len(icd) == 35_862
    assert icd["I10.x09"] == "原发性高血压"
    check_catalogue()
    assert len({d.code for d in DIAGNOSES.values()}) >= 60


@pytest.mark.parametrize("name", ["icd10_clinical_v2.csv"])
def test_shipped_icd10_file_is_the_shared_copy(shared_data, name):
    from importlib.resources import files

    shipped = files("yiyun.core").joinpath("data", "codes", "icd10-clinical-v2", name).read_bytes()
    upstream = (shared_data / "codes" / "icd10-clinical-v2" / name).read_bytes()
    assert hashlib.sha256(shipped).digest() == hashlib.sha256(upstream).digest()


@pytest.mark.parametrize("code", ["91350100M000100Y43", "91110105771583283D", "91440300708461136T"])
def test_uscc_check_characters_match_published_codes(code):
    assert uscc_check(code[:17]) == code[17]
    assert organization_code(code[8:16]) == code[8:17]
