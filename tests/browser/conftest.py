"""Real-browser fixtures: an isolated JupyterLab server on loopback and headless Chromium (Playwright).

Recipe: shared/design/browser-testing.md. The server serves *copies* of notebooks made of a chapter's own
``setup`` and ``widget``-tagged cells, from a temporary root, with temporary config/runtime/settings folders,
and is torn down by PID. Tests skip (with the reason) where Chromium or Playwright is absent — except in CI,
where that is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "browser-screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright; never `playwright install`)"
    if not Path(CHROMIUM).exists():
        return "Chromium is not installed (apt-get install -y chromium)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    for item in items:
        if "browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)
            if reason and not os.environ.get("CI"):
                item.add_marker(pytest.mark.skip(reason=f"browser test skipped: {reason}"))


def widget_notebook(chapter: Path, dest: Path) -> Path:
    """A notebook of the chapter's own ``setup`` and ``widget``-tagged cells, in order."""
    nb = nbformat.read(chapter, as_version=4)
    nb.cells = [c for c in nb.cells if {"setup", "widget"} & set(c.get("metadata", {}).get("tags", []))]
    if not any("widget" in c.metadata.get("tags", []) for c in nb.cells):
        raise ValueError(f"{chapter.name} has no cell tagged 'widget'")
    out = dest / (chapter.stem + "_widget.ipynb")
    nbformat.write(nb, out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory):
    if reason := _missing():
        pytest.fail(f"CI needs the browser layer: {reason}")
    root = tmp_path_factory.mktemp("lab-root")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if any("widget" in c.get("metadata", {}).get("tags", []) for c in json.loads(nb.read_text())["cells"]):
            widget_notebook(nb, root)
    state = tmp_path_factory.mktemp("lab-state")
    env = dict(os.environ)
    for var in (
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_RUNTIME_DIR",
        "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR",
        "IPYTHONDIR",
        "MPLCONFIGDIR",
    ):
        env[var] = str(state / var.lower())
        Path(env[var]).mkdir()
    (Path(env["JUPYTER_CONFIG_DIR"]) / "labconfig").mkdir()
    (Path(env["JUPYTER_CONFIG_DIR"]) / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env["BYTECOURSE_DATA"] = str(ROOT / "data")
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(state / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode}: {(state / 'server.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                pytest.fail("JupyterLab did not answer within 60 s")
            time.sleep(0.2)
    yield {"base": base, "token": token, "root": root}
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield ctx
        ctx.close()


@pytest.fixture
def lab_page(jupyter_server, browser_context):
    """Open a widget notebook in single-document mode, wait for the kernel, run all cells."""
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(exist_ok=True)
    pages = []

    def open_notebook(name: str):
        page = browser_context.new_page()
        pages.append(page)
        page.goto(f"{jupyter_server['base']}/doc/tree/{name}?token={jupyter_server['token']}&reset")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=90_000)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        return page

    yield open_notebook
    for i, page in enumerate(pages):  # the last state, pass or fail, for a person to look at
        page.screenshot(path=str(SCREENSHOTS / f"last_page_{i}.png"), full_page=True)
        page.close()
    shutdown_kernels(jupyter_server)


def shutdown_kernels(server: dict) -> None:
    """End every session and kernel the test started (a kernel left running would keep computing beside the next
    test's, on a 2-core machine), and check that none is left."""
    import json
    import urllib.request

    def call(path: str, method: str = "GET"):
        req = urllib.request.Request(f"{server['base']}{path}?token={server['token']}", method=method)
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
        return json.loads(body) if body else None

    for session in call("/api/sessions"):
        call(f"/api/sessions/{session['id']}", "DELETE")
    for kernel in call("/api/kernels"):
        call(f"/api/kernels/{kernel['id']}", "DELETE")
    assert call("/api/kernels") == [], "a kernel outlived its browser test"
