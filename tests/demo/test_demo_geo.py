import math

import pytest

from yiyun.demo.geo import gcj02_to_wgs84, out_of_china, wgs84_to_gcj02

# Published test vectors of the eviltransform project: (WGS-84 lat, lon), (GCJ-02 lat, lon).
VECTORS = [
    ((31.1774276, 121.5272106), (31.17530398364597, 121.531541859215)),  # Shanghai
    ((22.543847, 113.912316), (22.540796131694766, 113.9171764808363)),  # Shenzhen
    ((39.911954, 116.377817), (39.91334545536069, 116.38404722455657)),  # Beijing
]


@pytest.mark.parametrize("wgs,gcj", VECTORS)
def test_forward_transform_matches_published_vectors(wgs, gcj):
    lon, lat = wgs84_to_gcj02(wgs[1], wgs[0])
    assert lon == pytest.approx(gcj[1], abs=1e-9) and lat == pytest.approx(gcj[0], abs=1e-9)


@pytest.mark.parametrize("wgs,gcj", VECTORS)
def test_inverse_recovers_wgs84(wgs, gcj):
    lon, lat = gcj02_to_wgs84(gcj[1], gcj[0])
    assert lon == pytest.approx(wgs[1], abs=1e-8) and lat == pytest.approx(wgs[0], abs=1e-8)


def test_changsha_shift_is_a_few_hundred_metres():
    lon, lat = gcj02_to_wgs84(112.938884, 28.22808)  # 长沙市 centre as published (GCJ-02)
    dx = (112.938884 - lon) * 111_320 * math.cos(math.radians(lat))
    dy = (28.22808 - lat) * 110_570
    assert 200 < math.hypot(dx, dy) < 1000


def test_points_outside_china_are_unchanged():
    assert out_of_china(-0.1276, 51.5072)
    assert gcj02_to_wgs84(-0.1276, 51.5072) == (-0.1276, 51.5072)
    assert wgs84_to_gcj02(151.2093, -33.8688) == (151.2093, -33.8688)
