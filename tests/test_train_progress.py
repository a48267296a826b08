"""The training progress bar: images/s always, peak device memory on a GPU only."""

from __future__ import annotations

from pathlib import Path

import pytest

from alexnet import train as train_module
from alexnet.config import TrainConfig
from alexnet.train import bar_postfix, train


def one_epoch(out: Path) -> TrainConfig:
    return TrainConfig(
        model="alexnet-tiny", data="bundled", epochs=1, batch_size=32, max_train_images=64, val_size=32,
        width=0.5, out=str(out), progress=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("peak", "mem"),
    [(None, None), (0, "0.00GiB"), (3 * 2**30, "3.00GiB"), (1536 * 2**20, "1.50GiB")],
)
def test_the_postfix_shows_loss_lr_speed_and_memory_only_when_known(peak, mem):
    shown = bar_postfix(2.30259, 0.05, 1234.4, peak)
    assert shown["loss"] == "2.303" and shown["lr"] == "0.05" and shown["img_s"] == "1234"
    assert shown.get("mem") == mem


def test_a_cpu_run_shows_images_per_second_and_no_memory(tmp_path, capsys):
    train(one_epoch(tmp_path / "r"), log=lambda _: None)
    bar = capsys.readouterr().err
    assert "img_s=" in bar
    assert "mem=" not in bar


def test_a_run_on_a_device_with_memory_shows_it_and_records_the_peak(tmp_path, capsys, monkeypatch):
    resets: list[str] = []
    monkeypatch.setattr(train_module.backend, "reset_peak_gpu_memory", lambda device: resets.append(device))
    monkeypatch.setattr(train_module.backend, "peak_gpu_memory", lambda device: 5 * 2**29)
    result = train(one_epoch(tmp_path / "r"), log=lambda _: None)
    assert "mem=2.50GiB" in capsys.readouterr().err
    assert resets == ["cpu"]  # once per epoch, for the run's device
    assert result.metrics[0]["peak_gpu_memory_bytes"] == 5 * 2**29
