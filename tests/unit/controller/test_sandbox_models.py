"""A bound model folder (controller/bindings.py) in a real bubblewrap sandbox: the replica reads
its model file under the hidden state dir (as tickrun-fn under root), read-only, and still sees
nothing else of the state dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tickrun.controller.platforms.sandbox import bwrap_command, probe


def test_a_bound_model_folder_is_readable_and_read_only(tmp_path: Path) -> None:
    iso = probe()
    assert iso.mechanism == "bubblewrap", iso.reason  # this host runs replicas sandboxed
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    code = state / "code" / "fn" / "abc"
    code.mkdir(parents=True)
    models = state / "models"
    bound = models / ("a" * 64)
    other = models / ("b" * 64)
    for folder, text in ((bound, "weights-1"), (other, "weights-2")):
        folder.mkdir(parents=True)
        (folder / "model.pkl").write_text(text)
        (folder / "model.pkl").chmod(0o644)
        folder.chmod(0o755)
    (state / "token").write_text("secret-token")
    if iso.uid is not None:
        os.chown(code, iso.uid, iso.gid or iso.uid)
    script = (
        "import os\n"
        f"print(open('{bound}/model.pkl').read(), os.path.exists('{other}/model.pkl'),"
        f" os.path.exists('{state}/token'))\n"
        "try:\n"
        f"    open('{bound}/model.pkl', 'w')\n"
        "    print('writable')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    cmd = bwrap_command(
        iso,
        [sys.executable, "-c", script],
        code_dir=str(code),
        env_root=None,
        hidden=[str(state)],
        mounts=[str(bound), str(tmp_path / "missing")],  # a missing folder is skipped
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[:3] == ["weights-1", "False", "False"]
    assert words[3] in ("OSError", "PermissionError")  # read-only bind (EROFS or EACCES)
