"""What the manifest records about the model folder and the checkout."""

from __future__ import annotations

import shutil
import subprocess

from harness.models.resolve import folder_fingerprint, resolve_model
from harness.pipeline.manifest import git_state


def test_any_local_model_folder_gets_a_fingerprint_that_follows_its_files(tiny_model_path, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_path, folder)
    (folder / "big.bin").write_bytes(bytes(20 << 20))  # a "shard" above the whole-file limit
    resolved = resolve_model({"name": "mine", "path": str(folder)})
    first = resolved.fingerprint
    assert first and first == folder_fingerprint(folder)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("x")  # hidden entries do not count
    assert folder_fingerprint(folder) == first
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config + " ")
    second = folder_fingerprint(folder)
    assert second != first
    with (folder / "big.bin").open("r+b") as shard:  # a change near the end of a large file
        shard.seek((20 << 20) - 10)
        shard.write(b"\1")
    assert folder_fingerprint(folder) not in (first, second)


def test_git_dirty_counts_untracked_files_but_not_ignored_ones(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("results/\n")
    git("add", ".gitignore")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "my_model.yaml").write_text("path: x\n")
    state = git_state(tmp_path)
    assert state["dirty"] is True and state["changed_files"] == ["configs/my_model.yaml"]
    (tmp_path / ".gitignore").write_text("results/\noutputs/\n")  # a tracked file changed: " M .gitignore"
    assert git_state(tmp_path)["changed_files"] == [".gitignore", "configs/my_model.yaml"]
