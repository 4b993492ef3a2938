"""A process's core budget: its affinity, or the smaller share a parent gave it in CNNLAB_CORES."""

import os

import pytest

from cnnlab.runtime.cores import CORES_VARIABLE, affinity_cores, give_cores, usable_cores
from cnnlab.errors import CnnlabError


@pytest.fixture
def no_budget(monkeypatch):
    """No share given; the variables give_cores writes are put back after the test."""
    monkeypatch.delenv(CORES_VARIABLE, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_without_a_share_the_budget_is_every_core_the_affinity_allows(no_budget):
    assert usable_cores() == affinity_cores() == len(os.sched_getaffinity(0))


def test_a_share_given_to_the_process_is_its_budget(no_budget):
    give_cores(1)
    assert usable_cores() == 1
    assert (os.environ[CORES_VARIABLE], os.environ["OMP_NUM_THREADS"]) == ("1", "1")


def test_a_share_cannot_exceed_the_cores_the_affinity_allows(no_budget, monkeypatch):
    monkeypatch.setenv(CORES_VARIABLE, str(affinity_cores() + 3))
    assert usable_cores() == affinity_cores()


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_share_that_is_not_a_whole_number_of_cores_is_refused(monkeypatch, value):
    monkeypatch.setenv(CORES_VARIABLE, value)
    with pytest.raises(CnnlabError) as caught:
        usable_cores()
    assert str(caught.value) == f"CNNLAB_CORES: expected a whole number of cores, at least 1 (unset it to use every core the process may use); received '{value}'"
