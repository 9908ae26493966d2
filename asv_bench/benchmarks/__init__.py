"""numba_ln's airspeed velocity suite (see asv_bench/asv.conf.json)."""
