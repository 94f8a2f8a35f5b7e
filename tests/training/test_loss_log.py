import matplotlib

from tl_diffusion_prior.training.loss_log import plot_loss_curve, read_loss_csv, write_loss_csv
from tl_diffusion_prior.training.monitor import HISTORY_COLUMNS

HISTORY = [
    {"step": 10, "lr": 1e-3, "train_loss": 1.5, "val_loss": None, "grad_norm": 0.4},
    {"step": 20, "lr": 9e-4, "train_loss": 1.2, "val_loss": 1.3, "grad_norm": 0.3},
    {"step": 25, "val_loss": 1.25},
]


def test_csv_round_trip(tmp_path):
    write_loss_csv(tmp_path / "loss.csv", HISTORY)
    header = (tmp_path / "loss.csv").read_text().splitlines()[0]
    assert header == ",".join(HISTORY_COLUMNS)
    rows = read_loss_csv(tmp_path / "loss.csv")
    assert [r["step"] for r in rows] == [10, 20, 25]
    assert rows[0]["val_loss"] is None and rows[1]["val_loss"] == 1.3
    assert rows[2]["train_loss"] is None


def test_png_is_written_without_touching_the_backend(tmp_path):
    backend = matplotlib.get_backend()
    plot_loss_curve(tmp_path / "sub" / "loss.png", HISTORY, gaussian_reference=1.4, title="t")
    assert (tmp_path / "sub" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert matplotlib.get_backend() == backend
    plot_loss_curve(tmp_path / "empty.png", [])
    assert (tmp_path / "empty.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "sub"]  # no temp files
