"""The web UI in a real browser: headless Chromium (Debian's, through its chromedriver) against a
running station. Run by tests/web_ui.rs; exits non-zero with the first failed check.

Checks: every page loads with no console error and no failed request; the live view's picture
changes; labelling a part on the review page changes what GET /api/v1/inspections/{id} returns;
the language switch changes visible strings; a viewer sees no operator actions. With --shots DIR,
saves a screenshot of each page (1280x800) there.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

PAGES = ["/", "/live", "/review"]


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,800", "--lang=en-US"]:
        opts.add_argument(flag)
    opts.add_argument("--user-data-dir=" + tempfile.mkdtemp(prefix="linesight-chromium-"))
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=opts, service=service)


def api(base, path, token):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def errors(driver):
    """Console errors and failed requests (Chromium logs both as SEVERE) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def check(ok, what):
    if not ok:
        raise AssertionError(what)
    print("ok:", what, flush=True)


def sign_in(driver, token):
    driver.find_element(By.ID, "signin").click()
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-ok").click()
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "signout").is_displayed())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--operator", required=True)
    ap.add_argument("--viewer", required=True)
    ap.add_argument("--shots")
    args = ap.parse_args()
    base = args.base.rstrip("/")
    driver = browser()
    try:
        wait = WebDriverWait(driver, 20)
        # Every page, as a viewer who has not signed in (reads are open on this station).
        for page in PAGES:
            driver.get(base + page)
            wait.until(lambda d: d.find_element(By.ID, "who").text != "")
            time.sleep(1.5)  # its first refresh or pictures come in
            check(errors(driver) == [], f"{page} loads with no console error or failed request")

        # Live: the picture of a camera changes.
        driver.get(base + "/live")
        tile = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".tile[data-seq]"))
        first = tile.get_attribute("data-seq")
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".tile[data-seq]").get_attribute("data-seq") != first)
        src = driver.find_element(By.CSS_SELECTOR, ".tile img").get_attribute("src")
        check(src.startswith("data:image/jpeg;base64,"), "the live view shows the camera's latest part, and it changes")
        if args.shots:
            driver.save_screenshot(os.path.join(args.shots, "live.png"))

        # Language: the navigation switches to Chinese and back.
        Select(driver.find_element(By.ID, "lang")).select_by_value("zh-CN")
        nav = driver.find_element(By.CSS_SELECTOR, 'nav a[href="/live"]').text
        check(nav == "实时", f"the language switch changes visible strings (nav says {nav!r})")
        Select(driver.find_element(By.ID, "lang")).select_by_value("en")
        check(driver.find_element(By.CSS_SELECTOR, 'nav a[href="/live"]').text == "Live", "and back to English")

        # Review as a viewer: no label buttons.
        driver.get(base + "/review")
        sign_in(driver, args.viewer)
        wait.until(lambda d: d.find_element(By.ID, "item").is_displayed())
        labels = driver.find_element(By.CSS_SELECTOR, ".labels")
        check(not labels.is_displayed(), "a viewer sees no label buttons")
        driver.find_element(By.ID, "signout").click()

        # Review as an operator: label the selected part with a key; the API has the label.
        sign_in(driver, args.operator)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".labels").is_displayed())
        item = driver.find_element(By.ID, "item")
        inspection = item.get_attribute("data-id")
        wait.until(lambda d: d.find_element(By.ID, "item-image").get_attribute("src"))
        if args.shots:
            driver.save_screenshot(os.path.join(args.shots, "review.png"))
        driver.find_element(By.TAG_NAME, "body").send_keys("g")
        wait.until(lambda d: d.find_element(By.ID, "item").get_attribute("data-id") != inspection)
        reviews = api(base, f"/api/v1/inspections/{inspection}", args.operator).get("reviews", [])
        check(any(r.get("label") == "good" for r in reviews),
              f"labelling part {inspection} 'good' with the G key is in GET /api/v1/inspections/{inspection}")
        check(errors(driver) == [], "no console error or failed request while reviewing")

        driver.get(base + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cameras tbody tr"))
        check("ready-yes" in driver.find_element(By.ID, "ready").get_attribute("class"), "health says ready")
        if args.shots:
            time.sleep(1)
            driver.save_screenshot(os.path.join(args.shots, "health.png"))
        check(errors(driver) == [], "no console error on the health page")
    finally:
        driver.quit()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - the test reads the message
        print("FAILED:", e, file=sys.stderr, flush=True)
        sys.exit(1)
