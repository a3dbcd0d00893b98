"""OutputBudget on its own: pure bookkeeping, no processes."""

from __future__ import annotations

from sandbox_agent.output_budget import STDERR, STDOUT, OutputBudget


def test_unlimited_passes_everything_through():
    budget = OutputBudget(0)
    chunks = budget.add(STDOUT, b"x" * 100_000)
    assert b"".join(c.data for c in chunks) == b"x" * 100_000
    assert budget.finish() == [] and budget.dropped == {STDOUT: 0, STDERR: 0}


def test_tail_evicts_oldest_across_streams_and_marks_each_gap():
    budget = OutputBudget(10)  # head 5, tail 5
    live = budget.add(STDOUT, b"01234567")  # 01234 live, 567 to tail
    live += budget.add(STDERR, b"ab")  # tail: 567 ab
    live += budget.add(STDOUT, b"89")  # tail: 7 ab 89 -> evicts '56'
    assert [c.data for c in live] == [b"01234"]
    tail = budget.finish()
    assert [(c.stream, c.data, c.dropped_bytes_before) for c in tail] == [
        (STDOUT, b"7", 2),
        (STDERR, b"ab", 0),
        (STDOUT, b"89", 0),
    ]
    assert budget.total == {STDOUT: 10, STDERR: 2}
    assert budget.dropped == {STDOUT: 2, STDERR: 0}


def test_a_single_write_larger_than_the_tail_keeps_only_its_end():
    budget = OutputBudget(4)
    assert [c.data for c in budget.add(STDERR, b"abcdefghij")] == [b"ab"]
    tail = budget.finish()
    assert [(c.data, c.dropped_bytes_before) for c in tail] == [(b"ij", 6)]
    assert budget.dropped[STDERR] == 6
