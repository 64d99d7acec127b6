"""The Dagster UI for real: a round materialized with the smoke profile, `synthflow ui` (dagster dev) on a
free port with its own DAGSTER_HOME, the GraphQL API, and headless Chromium looking at the asset graph and a
plot.

Screenshots land in the test's temp folder (printed with -s); set SYNTHFLOW_UI_SHOTS=DIR to keep copies.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from synthflow.dagster.export import run_export
from synthflow.dagster.runner import run_rounds
from synthflow.spec import load_spec
from tests.test_pipeline import small_spec

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PIPELINE = "math_word_problems"
ASSETS = ("seed", "seed_map", "candidates", "verified", "coverage", "training_set", "export")
STARTUP_TIMEOUT = 600  # two busy cores: dagster dev, its code server and daemon import a lot
PAGE_TIMEOUT = 180


@pytest.fixture(scope="module")
def ui_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project with one round and one export materialized in its own Dagster instance."""
    root = tmp_path_factory.mktemp("ui") / "project"
    # Only this pipeline: the UI test must not depend on other specs in assets/.
    (root / "assets" / "data").mkdir(parents=True)
    shutil.copy(REPO / "assets" / f"{PIPELINE}.yaml", root / "assets")
    shutil.copy(REPO / "assets" / "data" / f"{PIPELINE}.jsonl", root / "assets" / "data")
    shutil.copytree(REPO / "resources", root / "resources")
    shutil.copy(REPO / "definitions.py", root / "definitions.py")
    for prof in (root / "resources").glob("*.yaml"):
        prof.write_text(prof.read_text().replace("root: .synthflow/store", f"root: {root / 'store'}"))
    small_spec(root)
    spec_path = root / "assets" / f"{PIPELINE}.yaml"
    spec_path.write_text(spec_path.read_text() + "\nexport:\n  url: ../exports/math\n")
    spec = load_spec(spec_path)
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_rounds(spec, 1, profile="smoke", project_root=root, instance=instance, echo=lambda _: None)
        run_export(spec, profile="smoke", project_root=root, instance=instance)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        body = json.load(response)
    assert "errors" not in body, body["errors"]
    return body["data"]


def _stop(proc: subprocess.Popen) -> None:
    """dagster dev and everything it started share one process group (start_new_session): end them all."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 15)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            break
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # children can outlive the leader: none may stay behind
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@contextlib.contextmanager
def ui_server(
    cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, ready: Callable[[list[list[str]]], bool]
) -> Iterator[str]:
    """Run `synthflow ui` (`cmd`) on a free 127.0.0.1 port until `ready(asset key paths)`; yield its base URL."""
    port = _free_port()
    log = log_path.open("w")
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"synthflow ui exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
            try:
                nodes = graphql(url, "{ assetNodes { assetKey { path } } }")["assetNodes"]
                if ready([n["assetKey"]["path"] for n in nodes]):
                    break
            except (OSError, AssertionError, ValueError):  # not listening yet, or still loading
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the UI did not load the code location in {STARTUP_TIMEOUT}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(2)
        yield url
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def webserver(ui_project: Path) -> Iterator[str]:
    """`synthflow ui` on a free 127.0.0.1 port; yields the base URL once the code location has loaded."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(ui_project / "dagster_home"),
        "SYNTHFLOW_PROFILE": "smoke",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "synthflow.cli", "ui", "--profile", "smoke"]
    with ui_server(cmd, ui_project, env, ui_project / "dagster-dev.log", lambda keys: len(keys) >= len(ASSETS)) as url:
        yield url


ASSET_QUERY = """
query Asset($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      description
      kinds
      groupName
      owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
      tags { key value }
      isPartitioned
      partitionKeys
      partitionStats { numMaterialized numPartitions }
      pools
      assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
      assetMaterializations(limit: 1) {
        partition
        metadataEntries {
          label
          __typename
          ... on MarkdownMetadataEntry { mdStr }
          ... on TableSchemaMetadataEntry { schema { columns { name type } } }
        }
      }
    }
  }
}
"""


def _asset(url: str, name: str) -> dict:
    return graphql(url, ASSET_QUERY, {"path": [PIPELINE, name]})["assetNodeOrError"]


def test_graphql_shows_assets_partitions_checks_and_metadata(webserver):
    nodes = {name: _asset(webserver, name) for name in ASSETS}
    for name, node in nodes.items():
        assert node["description"], name
        assert node["kinds"], name
        assert node["groupName"] == PIPELINE
        assert {"team": "ml-data"} in node["owners"], name
        assert {"key": "domain", "value": "math"} in node["tags"], name
        [mat] = node["assetMaterializations"]
        entries = {e["label"]: e for e in mat["metadataEntries"]}
        assert "dagster/column_schema" in entries, (name, sorted(entries))
        columns = entries["dagster/column_schema"]["schema"]["columns"]
        assert columns, name
        assert entries["preview"]["__typename"] == "MarkdownMetadataEntry", name
        assert entries["preview"]["mdStr"].startswith("|"), name  # a markdown table of rows

    for name in ("candidates", "verified", "coverage", "training_set"):
        assert nodes[name]["isPartitioned"]
        assert nodes[name]["partitionKeys"][0] == "2026-01-01"
        assert nodes[name]["partitionStats"]["numMaterialized"] == 1
        assert nodes[name]["assetMaterializations"][0]["partition"] == "2026-01-01"
        assert nodes[name]["pools"] == ["gpu"]
    assert not nodes["seed"]["isPartitioned"] and not nodes["export"]["isPartitioned"]

    checks = {
        n: {c["name"]: c["blocking"] for c in node["assetChecksOrError"]["checks"]}
        for n, node in nodes.items()
    }
    assert checks["seed"] == {"schema": True}
    assert {"keeps_previous_rows", "real_fraction", "unique_ids", "schema"} <= set(checks["training_set"])

    # Plots are markdown images with a data: URI (the form the UI renders), holding a real PNG.
    for name, label in (("verified", "verdicts_plot"), ("coverage", "rounds_plot")):
        md = next(
            e for e in nodes[name]["assetMaterializations"][0]["metadataEntries"] if e["label"] == label
        )
        prefix = "(data:image/png;base64,"
        assert md["mdStr"].startswith("![") and prefix in md["mdStr"]
        png = base64.b64decode(md["mdStr"].split(prefix, 1)[1].rstrip(")"))
        assert png.startswith(b"\x89PNG") and len(png) > 2000

    export_meta = {e["label"]: e for e in nodes["export"]["assetMaterializations"][0]["metadataEntries"]}
    assert "## Accumulation policy" in export_meta["card"]["mdStr"]

    repos = graphql(
        webserver,
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { "
        "schedules { name cronSchedule executionTimezone scheduleState { status } } jobs { name } } } } }",
    )["repositoriesOrError"]["nodes"]
    schedules = {s["name"]: s for repo in repos for s in repo["schedules"]}
    schedule = schedules[f"{PIPELINE}__next_round"]
    assert schedule["cronSchedule"] == "0 0 * * *" and schedule["executionTimezone"] == "UTC"
    assert schedule["scheduleState"]["status"] == "STOPPED"
    assert f"{PIPELINE}__rounds" in {j["name"] for repo in repos for j in repo["jobs"]}


@pytest.fixture(scope="module")
def browser(webserver):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (`make test` installs them)")
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    graphql(webserver, "mutation { setNuxSeen }")  # no "join the community" dialog over the page
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="synthflow-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1600,1100",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_for(driver, predicate, what: str, timeout: float = PAGE_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # the page is still rendering: elements come and go
            pass
        time.sleep(1)
    raise AssertionError(
        f"timed out waiting for {what}; page text: {driver.find_element('tag name', 'body').text[:1500]}"
    )


def _keep(shot: Path) -> None:
    keep = os.environ.get("SYNTHFLOW_UI_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    print(f"screenshot: {shot}")


def test_screenshot_of_the_asset_graph_shows_the_pipeline(webserver, browser, ui_project):
    from selenium.webdriver.common.by import By

    browser.get(f"{webserver}/asset-groups/{PIPELINE}")
    # Graph nodes are in the DOM as text once the layout has run.
    _wait_for(
        browser,
        lambda: all(n in browser.find_element(By.TAG_NAME, "body").text for n in ASSETS),
        "the asset graph",
    )
    time.sleep(2)  # let the graph's zoom-to-fit animation settle before the picture
    shot = ui_project / "asset-graph.png"
    assert browser.save_screenshot(str(shot))
    _keep(shot)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 30_000, len(data)
    nodes = browser.find_elements(By.XPATH, "//*[normalize-space()='training_set']")
    assert any(n.is_displayed() for n in nodes)


def test_a_plot_renders_as_an_image_in_the_ui(webserver, browser, ui_project):
    from selenium.webdriver.common.by import By

    browser.get(f"{webserver}/assets/{PIPELINE}/verified")
    row = _wait_for(
        browser,
        lambda: browser.find_element(By.XPATH, "//tr[.//td[normalize-space()='verdicts_plot']]"),
        "the verdicts_plot metadata row",
    )
    link = row.find_element(By.XPATH, ".//*[contains(text(), 'Show Markdown')]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
    link.click()
    image = _wait_for(
        browser,
        lambda: next(
            img
            for img in browser.find_elements(By.TAG_NAME, "img")
            if (img.get_attribute("src") or "").startswith("data:image/png")
            and browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100
        ),
        "the plot image in the markdown dialog",
    )
    assert image.is_displayed() and image.size["width"] > 100
    time.sleep(1.5)  # the dialog fades in; a picture taken earlier shows the table through it
    shot = ui_project / "verdicts-plot.png"
    assert browser.save_screenshot(str(shot))
    _keep(shot)
