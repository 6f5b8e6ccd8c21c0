"""The service's web pages in a real headless browser (Debian's chromium and chromium-driver).

Sign-in through the form, the dashboard, run, checkpoint and dataset pages,
the as-of control, a screenshot of the checkpoint page that must not be
blank, and no request going anywhere but the service. Skipped, with the
reason, where chromium or its driver is not installed; with
TRAINLEDGER_REQUIRE_BROWSER=1 (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serve_support import Server, issue_tokens, start_server
from tests.support import Cli, deployable_lifecycle, reader_request
from trainledger.adapters.store import open_ledger

REQUIRE_ENV = "TRAINLEDGER_REQUIRE_BROWSER"
HOSTILE = "<script>document.title='owned'</script><b>bold</b>"


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        reason = "chromium and chromium-driver are not installed (apt-get install chromium"
        reason += " chromium-driver)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    return chromium, driver


@dataclass
class Site:
    server: Server
    reader: str
    run_id: str
    checkpoint_id: str
    failed_run: str
    root: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _binaries()
    root = tmp_path_factory.mktemp("browser")
    store = f"sqlite:///{root / 'ledger.db'}"
    ledger = open_ledger(store)
    run_id, checkpoint_id = deployable_lifecycle(ledger, root / "out", eval_id="eval-seen")
    ledger.deployments.evaluate(checkpoint_id, actor="gate")
    ledger.deployments.advance(checkpoint_id, review=True, note="looked", actor="reviewer")
    ledger.deployments.bind("local-reader", checkpoint_id, note="first", actor="ops")
    ledger.deployments.enable_routing("local-reader", actor="ops")
    failed = ledger.create_experiment(
        reader_request(root / "out"),
        dataset_fingerprint="0123456789abcdef",
        sample_count=10,
        actor="tester",
    )["trainRunId"]
    ledger.fail_run(failed, HOSTILE, actor="tester")
    ledger.close()
    tokens = issue_tokens(Cli(store, cwd=root), "reader", "admin")
    server = start_server(store, root)
    yield Site(server, tokens["reader"], run_id, checkpoint_id, failed, root)
    server.stop()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    # A loaded machine may still be rendering the page an element is looked for on.
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(browser: Any) -> list[str]:
    """Every URL the pages asked for since the last call (Chrome's performance log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def arrived(browser: Any, where: Callable[[str], bool]) -> str:
    """The page's URL once a click or a submit has navigated to where it should (a loaded
    machine may still be loading the page when the click returns)."""
    from selenium.webdriver.support.ui import WebDriverWait

    # On a timeout the assertion after says where it ended up instead.
    with contextlib.suppress(Exception):
        WebDriverWait(browser, 15).until(lambda b: where(b.current_url))
    url: str = browser.current_url
    return url


def sign_in(browser: Any, site: Site, token: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{site.server.base}/login")
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    # Signed in (on the dashboard) or refused (the form again, with its message):
    # only then does the next page see the cookie, or its absence.
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(b: Any) -> bool:
        if b.execute_script("return document.readyState") != "complete":
            return False
        on_dashboard = b.current_url == f"{site.server.base}/" and b.find_elements(By.ID, "stats")
        return bool(on_dashboard or b.find_elements(By.ID, "message"))

    with contextlib.suppress(Exception):
        WebDriverWait(browser, 15).until(settled)


def load(browser: Any, url: str, landmark: str) -> None:
    """Open url and wait until the page is fully loaded and shows the element landmark: a
    navigation still committing (the sign-in's redirect on a loaded machine) must not abort
    what the test does next."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 15).until(
        lambda b: (
            b.execute_script("return document.readyState") == "complete"
            and b.current_url == url
            and b.find_elements(By.ID, landmark)
        )
    )


def test_pages_need_a_sign_in_and_a_wrong_token_is_refused(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(f"{site.server.base}/checkpoints/{site.checkpoint_id}")
    assert browser.current_url.startswith(f"{site.server.base}/login")
    sign_in(browser, site, "tl_" + "0" * 32 + "_" + "x" * 43)
    assert "unknown or revoked" in browser.find_element(By.ID, "message").text
    assert browser.get_cookies() == []


def test_signed_in_pages_show_the_ledger_and_load_nothing_from_elsewhere(
    browser: Any, site: Site
) -> None:
    from selenium.webdriver.common.by import By

    requested_urls(browser)  # drop what came before
    sign_in(browser, site, site.reader)
    assert arrived(browser, lambda url: url == f"{site.server.base}/") == f"{site.server.base}/"
    (cookie,) = browser.get_cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "signed in as reader" in body
    assert "deployableCheckpoints" in body
    assert site.checkpoint_id[:8] in body
    slots = browser.find_element(By.ID, "deployments").text
    assert f"local-reader {site.checkpoint_id[:8]}" in slots
    assert "never bound" in slots  # local-editor

    load(browser, f"{site.server.base}/runs/{site.run_id}", "run")
    run_text = browser.find_element(By.ID, "run").text
    assert "completed" in run_text
    assert site.checkpoint_id[:8] in browser.find_element(By.ID, "checkpoints").text

    load(browser, f"{site.server.base}/checkpoints/{site.checkpoint_id}", "bindings")
    assert "DEPLOYABLE" in browser.find_element(By.TAG_NAME, "body").text
    assert "eval-seen" in browser.find_element(By.ID, "evals").text
    assert "marked deployable" in browser.find_element(By.ID, "deployability").text
    promotion = browser.find_element(By.ID, "promotion").text
    assert "shadow_ready" in promotion
    assert "reviewer" in promotion
    assert "reviewedSubsetQuality" in promotion
    bindings = browser.find_element(By.ID, "bindings").text
    assert "local-reader" in bindings
    assert "active" in bindings
    graph = browser.find_element(By.CSS_SELECTOR, "figure.lineage svg")
    assert graph.size["width"] > 300
    assert f"checkpoint {site.checkpoint_id}" in graph.get_attribute("innerHTML")

    load(browser, f"{site.server.base}/datasets/0123456789abcdef", "runs")
    assert "2 runs" in browser.find_element(By.TAG_NAME, "body").text

    urls = requested_urls(browser)
    assert any(url.endswith("/static/style.css") for url in urls)
    elsewhere = [u for u in urls if not u.startswith(f"{site.server.base}/")]
    assert elsewhere == []
    # Every resource the last page loaded came from the service itself.
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert all(url.startswith(f"{site.server.base}/") for url in resources)


def test_text_from_the_ledger_is_escaped(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, site, site.reader)
    load(browser, f"{site.server.base}/runs/{site.failed_run}", "run")
    assert HOSTILE in browser.find_element(By.ID, "run").text
    assert browser.find_elements(By.CSS_SELECTOR, "#run script, #run b") == []
    assert browser.title != "owned"


def test_the_as_of_control_shows_the_past(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, site, site.reader)
    load(browser, f"{site.server.base}/checkpoints/{site.checkpoint_id}", "asOf")
    field = browser.find_element(By.ID, "asOf")
    field.send_keys("2000-01-01T00:00:00Z")
    field.submit()
    assert "asOf=2000-01-01T00%3A00%3A00Z" in arrived(browser, lambda url: "asOf=" in url)
    assert "No checkpoint" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{site.server.base}/?asOf=not-a-time")
    assert "not an ISO-8601 timestamp" in browser.find_element(By.ID, "message").text


def test_a_screenshot_of_the_checkpoint_page_is_not_blank(browser: Any, site: Site) -> None:
    from PIL import Image

    sign_in(browser, site, site.reader)
    load(browser, f"{site.server.base}/checkpoints/{site.checkpoint_id}", "bindings")
    png = browser.get_screenshot_as_png()
    (site.root / "checkpoint.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    assert (width, height) >= (800, 600)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # text, boxes, the graph's fills: not one flat colour
    background = max(colours)[1]
    drawn = sum(count for count, colour in colours if colour != background)
    assert drawn > 0.02 * width * height


def test_signing_out_drops_the_cookie(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, site, site.reader)
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    login = f"{site.server.base}/login"
    assert arrived(browser, lambda url: url.startswith(login)).startswith(login)
    assert browser.get_cookies() == []
    browser.get(f"{site.server.base}/")
    assert browser.current_url.startswith(f"{site.server.base}/login")
