"""The demo page at / in a real headless browser (Debian's chromium + chromedriver, via selenium).

The flow a person follows: search the catalogue, click items into a history, read the top-k (checked
against the API), add an item by text with the API key, and find it recommended at once. A
screenshot is saved as demo_page.png (the new item among the top-k) and demo_page_final.png in the
test's tmp dir.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from serving_fixtures import SCIENCE_TEXTS, ServerThread, text_encoder_class, text_model_dir

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev dependency: pip install -e '.[dev]'")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from unisrec.serving.app import create_app  # noqa: E402
from unisrec.serving.recommender import Recommender  # noqa: E402

KEY = "demo-page-key-0123456789"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> tuple[str, str] | None:
    """(browser binary, chromedriver) from $CHROME_BIN / $CHROMEDRIVER or the PATH."""
    browser = os.environ.get("CHROME_BIN") or next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture()
def browser():
    found = find_browser()
    if found is None:
        pytest.skip("no chromium + chromedriver found (Debian: apt-get install chromium chromium-driver; .ci/run does it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1250",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def table_rows(driver) -> list[tuple[str, str, str]]:
    """(id, text, score) of each recommendation row, as the page shows them."""
    return [
        (r.find_element(By.CLASS_NAME, "item-id").text, r.find_element(By.CLASS_NAME, "item-text").text,
         r.find_element(By.CLASS_NAME, "score").text)
        for r in driver.find_elements(By.CSS_SELECTOR, "#recs tbody tr")
    ]


def api_rows(url: str, history: list[str], k: int) -> list[tuple[str, str, str]]:
    items = httpx.post(f"{url}/recommend", json={"history": history, "k": k, "exclude_seen": True}).json()["items"]
    return [(x["id"], x["text"], f"{x['score']:.4f}") for x in items]


@pytest.mark.skipif(text_encoder_class() is None, reason="unisrec.text.TextEncoder not available")
def test_demo_page_flow(browser, tmp_path):
    rec = Recommender.from_pretrained(text_model_dir(tmp_path / "model"))
    wait = WebDriverWait(browser, 30)
    with ServerThread(create_app(rec, api_key=KEY)) as url:
        browser.get(f"{url}/")
        assert browser.title == "unisrec demo"
        wait.until(EC.text_to_be_present_in_element((By.ID, "server-status"), "8 items"))
        assert "needs the API key" in browser.find_element(By.ID, "server-status").text

        # 1. search: every word must match, case-insensitively
        box = browser.find_element(By.ID, "search-q")
        box.send_keys("GLASS")
        wait.until(EC.text_to_be_present_in_element((By.ID, "search-status"), "2 matches"))
        results = browser.find_elements(By.CSS_SELECTOR, "#search-results li")
        assert [r.get_attribute("data-id") for r in results] == ["A3", "A6"]
        assert SCIENCE_TEXTS["A3"] in results[0].text

        # 2. click into the history; the top-k follows, exactly as the API answers
        results[0].find_element(By.TAG_NAME, "button").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "recs-status"), "history of 1 item"))
        assert [li.get_attribute("data-id") for li in browser.find_elements(By.CSS_SELECTOR, "#history li")] == ["A3"]
        assert table_rows(browser) == api_rows(url, ["A3"], 10)
        box.clear()
        box.send_keys("lab safety")
        wait.until(lambda d: [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "#search-results li")]
                   == ["A2", "A4"])
        browser.find_element(By.CSS_SELECTOR, '#search-results li[data-id="A4"] button').click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "recs-status"), "history of 2 items"))
        k = browser.find_element(By.ID, "k")
        k.clear()
        k.send_keys("3\n")
        wait.until(EC.text_to_be_present_in_element((By.ID, "recs-status"), "Top 3 for a history of 2"))
        rows = table_rows(browser)
        assert rows == api_rows(url, ["A3", "A4"], 3) and len(rows) == 3
        assert not {"A3", "A4"} & {r[0] for r in rows}  # "hide items already in the history" is on
        top_id, top_text, top_score = rows[0]

        # 3. add an item by text: a wrong key is refused and shown; the right one works
        browser.find_element(By.ID, "token").send_keys("not-the-key")
        browser.find_element(By.ID, "new-id").send_keys("B7")
        browser.find_element(By.ID, "new-text").send_keys(SCIENCE_TEXTS[top_id])  # the top item's twin
        browser.find_element(By.ID, "add-btn").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "add-status"), "Not added: the API key is wrong"))
        assert "B7" not in rec
        token = browser.find_element(By.ID, "token")
        token.clear()
        token.send_keys(KEY)
        browser.find_element(By.ID, "add-btn").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "add-status"), "Added B7; the catalogue has 9 items"))
        # recommendable at once: the twin ties with the item whose text it copied, at the top
        wait.until(lambda d: "B7" in [r[0] for r in table_rows(d)])
        rows = table_rows(browser)
        assert {rows[0][0], rows[1][0]} == {top_id, "B7"} and rows[0][2] == rows[1][2] == top_score
        assert rows == api_rows(url, ["A3", "A4"], 3)
        assert "new" in browser.find_element(By.CSS_SELECTOR, '#recs tbody tr[data-id="B7"]').get_attribute("class")
        browser.save_screenshot(str(tmp_path / "demo_page.png"))  # the new item, highlighted among the top-k
        # and usable in the history
        browser.find_element(By.ID, "add-to-history").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "recs-status"), "history of 3 items"))
        assert [li.get_attribute("data-id") for li in browser.find_elements(By.CSS_SELECTOR, "#history li")] == ["A3", "A4", "B7"]
        assert table_rows(browser) == api_rows(url, ["A3", "A4", "B7"], 3)
        wait.until(EC.text_to_be_present_in_element((By.ID, "server-status"), "9 items"))
        browser.save_screenshot(str(tmp_path / "demo_page_final.png"))
        errors = [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert [m for m in errors if "/items - Failed to load resource" not in m or "401" not in m] == [], errors
    assert (tmp_path / "demo_page.png").stat().st_size > 10_000


def test_demo_page_is_self_contained(tmp_path):
    """No external resources (works offline), strict CSP, served from the package's own files."""
    from serving_fixtures import random_model_dir

    rec = Recommender.from_pretrained(random_model_dir(tmp_path, n=10))
    with ServerThread(create_app(rec)) as url, httpx.Client(base_url=url) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        for asset, kind in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
            r = c.get(asset)
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
            assert "http://" not in r.text and "https://" not in r.text
            assert asset in page.text
        assert "http://" not in page.text and "https://" not in page.text
        assert "innerHTML" not in c.get("/static/app.js").text  # texts are shown with textContent only
        assert c.get("/static/other.js").status_code == 404
        assert "/" not in c.get("/openapi.json").json()["paths"]
