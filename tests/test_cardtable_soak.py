"""The long version of the card table's stream test (tests/device/test_cardtable.py::
test_long_stream_with_cuts_reboots_installs_and_resends): thousands of deltas through the
shipped 4 MB geometry with bucket refreshes, snapshot installs, plain reboots and power cuts
at random writes, the backend resending after each cut. CPython, behind the soak marker."""
import pytest

import test_cardtable as cases


@pytest.mark.soak
@pytest.mark.parametrize("seed", [3, 17, 29])
def test_long_stream_soak(seed):
    fig = cases.long_stream(n_deltas=3000, seed=seed, install_every=700, cut_one_in=3, cards=400)
    # the stream went through everything it is meant to: cuts on both sides of a delta,
    # installs, refreshes of full buckets and plain reboots
    assert fig["cuts"] > 100 and fig["installs"] >= 4 and fig["reboots"] > 20, fig
    assert fig["resent_applied"] > 0 and fig["resent_duplicate"] > 0, fig
    assert fig["bucket_rewrites"] > 10 and fig["upkeep_steps"] > 0, fig
