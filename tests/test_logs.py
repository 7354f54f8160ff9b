"""The log: UTC times ending in Z, and rotation at the size limit."""

import logging
import re

from lestats import logs


def test_records_are_stamped_in_utc_with_z_and_rotate(tmp_path):
    path = tmp_path / "webserver.log"
    handler = logs.configure(str(path), max_bytes=2000, backups=2)
    try:
        log = logging.getLogger("lestats.test")
        for i in range(100):
            log.info("record %d %s", i, "x" * 40)
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["webserver.log", "webserver.log.1", "webserver.log.2"]
    for name in files:
        text = (tmp_path / name).read_text()
        assert 0 < len(text) <= 2000
        for line in text.splitlines():
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO ", line), line
    assert "record 99 " in path.read_text()


def test_an_existing_log_counts_toward_the_limit(tmp_path):
    path = tmp_path / "webserver.log"
    path.write_text("x" * 1990 + "\n")
    handler = logs.configure(str(path), max_bytes=2000, backups=1)
    try:
        logging.getLogger("lestats.test").info("this one rolls the file over")
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()
    assert (tmp_path / "webserver.log.1").read_text() == "x" * 1990 + "\n"
    assert "rolls the file over" in path.read_text()
