"""``bench/suite_cpu.py`` sums the tests' CPU by file, the dearest first. The command itself runs the suite (or a
selection) once more in a pytest process of its own: too dear to run inside the suite it measures."""

from __future__ import annotations

from bench.suite_cpu import by_file


def test_tests_are_summed_by_file_the_dearest_first() -> None:
    rows = [
        {"test": "tests/test_a.py::test_one", "cpu": 0.5, "children": 0.0, "wall": 0.6},
        {"test": "tests/test_b.py::test_one[x]", "cpu": 0.25, "children": 1.0, "wall": 1.5},
        {"test": "tests/test_a.py::test_two", "cpu": 0.25, "children": 0.0, "wall": 0.25},
        {"test": "tests/test_c.py::test_one", "cpu": 0.125, "children": 0.0, "wall": 0.125},
    ]
    assert by_file(rows) == [
        {"file": "tests/test_b.py", "tests": 1, "cpu": 0.25, "children": 1.0, "wall": 1.5},
        {"file": "tests/test_a.py", "tests": 2, "cpu": 0.75, "children": 0.0, "wall": 0.85},
        {"file": "tests/test_c.py", "tests": 1, "cpu": 0.125, "children": 0.0, "wall": 0.125},
    ]
    assert by_file([]) == []
