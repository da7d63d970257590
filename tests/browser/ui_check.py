"""The web UI in a real browser: headless Chromium (Debian's, through its chromedriver) against a
running station. Run by tests/web_ui.rs; exits non-zero with the first failed check.

Checks: every page loads with no console error and no failed request; the live view's picture
changes; labelling a part on the review page changes what GET /api/v1/inspections/{id} returns,
and the label filter finds it again; the language switch changes visible strings; a viewer sees
no operator actions; moving the operating point's slider shows the projected figures and
applying it (admin) changes the recipe's threshold; the teach wizard teaches a model from a
camera's next parts at the overkill entered in it and runs it in shadow, comparing parts; the recipes page changes the rules
and shows the audit log; the stats page draws its charts and exports CSV; the health page shows
the line links and disks. With --shots DIR, saves a screenshot of each page (1280x800) there.
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

PAGES = ["/", "/live", "/review", "/operating-point", "/teach", "/recipes", "/stats"]


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


def api(base, path, token, body=None):
    headers = {"Authorization": "Bearer " + token}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers)
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
    ap.add_argument("--admin", required=True)
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
        heat = wait.until(lambda d: d.find_element(By.ID, "item").get_attribute("data-heat") == "shown"
                          and d.find_element(By.ID, "item-heat"))
        check(heat.is_displayed() and heat.size["width"] > 100,
              "the large view shows the anomaly heat map over the part")
        driver.find_element(By.TAG_NAME, "body").send_keys("g")
        wait.until(lambda d: d.find_element(By.ID, "item").get_attribute("data-id") != inspection)
        reviews = api(base, f"/api/v1/inspections/{inspection}", args.operator).get("reviews", [])
        check(any(r.get("label") == "good" for r in reviews),
              f"labelling part {inspection} 'good' with the G key is in GET /api/v1/inspections/{inspection}")
        check(errors(driver) == [], "no console error or failed request while reviewing")

        # The label filter finds the part again among those labelled good.
        Select(driver.find_element(By.ID, "f-label")).select_by_value("good")
        driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#queue li[data-id="{inspection}"]'))
        check(True, f"the label filter lists part {inspection} among the parts labelled good")

        # Operating point: label parts through the API (NG ones as defects, OK ones as good), then
        # the slider shows what another threshold would give, and applying it as an admin
        # changes the recipe's threshold.
        queue = api(base, "/api/v1/review/queue?limit=60", args.operator)["items"]
        kinds = {"defect": 0, "good": 0}
        for item in queue:
            if item["image_score"] is None:
                continue
            kind = "defect" if item["verdict"] == "NG" else "good"
            api(base, f"/api/v1/inspections/{item['id']}/review", args.operator, {"label": kind})
            kinds[kind] += 1
        check(kinds["defect"] > 0 and kinds["good"] > 0, f"parts of both kinds labelled for the operating point: {kinds}")
        driver.get(base + "/operating-point")
        wait.until(lambda d: d.find_element(By.ID, "op").is_displayed())
        check(not driver.find_element(By.ID, "op-apply").is_displayed(), "an operator sees no apply button")
        driver.find_element(By.ID, "signout").click()
        sign_in(driver, args.admin)
        wait.until(lambda d: d.find_element(By.ID, "op-apply").is_displayed())
        slider = driver.find_element(By.ID, "op-slider")
        before = driver.find_element(By.ID, "op-projected").text
        target = 0 if slider.get_attribute("value") != "0" else int(slider.get_attribute("max"))
        driver.execute_script(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));", slider, target)
        after = driver.find_element(By.ID, "op-projected").text
        check(after != before and "/" in after, f"moving the slider shows the projected figures ({before!r} -> {after!r})")
        chosen = driver.execute_script("return op.points[Number(arguments[0].value)].threshold;", slider)
        if args.shots:
            driver.save_screenshot(os.path.join(args.shots, "operating-point.png"))
        driver.find_element(By.ID, "op-apply").click()
        recipe = driver.find_element(By.ID, "op-recipe").get_attribute("value")

        def applied(_):
            recipes = api(base, "/api/v1/recipes", args.admin)["recipes"]
            return any(r["name"] == recipe and abs(r["threshold"] - chosen) < 1e-4 for r in recipes)
        wait.until(applied)
        check(True, f"applying sets recipe {recipe}'s threshold to {chosen:.4f}")
        audit = api(base, "/api/v1/audit", args.admin)["items"]
        check(audit and audit[0]["action"] == "recipe.threshold", "the change is audited")
        check(errors(driver) == [], "no console error or failed request on the operating point page")

        # Recipes: new rules saved on the page are in force (GET /recipes) and in the audit log.
        driver.get(base + "/recipes")
        card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f'.recipe[data-recipe="{recipe}"]'))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audit tbody tr"))
        card.find_element(By.CSS_SELECTOR, ".edit-rules").click()
        rules = [{"class": "anomaly", "max_count": 1}]
        area = card.find_element(By.CSS_SELECTOR, ".rules")
        area.clear()
        area.send_keys(json.dumps(rules))
        card.find_element(By.CSS_SELECTOR, ".rules-form button[type=submit]").click()

        def rules_in_force(_):
            recipes = api(base, "/api/v1/recipes", args.admin)["recipes"]
            return any(r["name"] == recipe and (r["rules"] or [{}])[0].get("max_count") == 1 for r in recipes)
        wait.until(rules_in_force)
        wait.until(lambda d: "recipe.rules" in d.find_element(By.ID, "audit").text)
        check(True, f"rules saved on the recipes page are in force for {recipe} and in the audit log")
        # Switch one camera's recipe from the page (the station answers with its first frame).
        card = driver.find_element(By.CSS_SELECTOR, f'.recipe[data-recipe="{recipe}"]')
        Select(card.find_element(By.CSS_SELECTOR, ".switch-camera")).select_by_value("tile")
        card.find_element(By.CSS_SELECTOR, ".activate").click()
        wait.until(lambda d: f"Camera tile now runs recipe {recipe}" in d.find_element(By.ID, "status").text)
        check(True, "one camera's recipe is switched from the recipes page")
        if args.shots:
            driver.execute_script("window.scrollTo(0, 0);")
            driver.save_screenshot(os.path.join(args.shots, "recipes.png"))
        check(errors(driver) == [], "no console error or failed request on the recipes page")

        # Teach wizard: the next parts of camera "metal" → teach → figures → shadow → comparison.
        driver.get(base + "/teach")
        wait.until(lambda d: d.find_element(By.ID, "t-form").is_displayed())
        Select(driver.find_element(By.ID, "t-recipe")).select_by_value(recipe)
        Select(driver.find_element(By.ID, "t-camera")).select_by_value("metal")
        parts = driver.find_element(By.ID, "t-parts")
        parts.clear()
        parts.send_keys("12")
        driver.find_element(By.ID, "t-overkill").send_keys("5")
        driver.find_element(By.ID, "t-start").click()
        WebDriverWait(driver, 300).until(lambda d: d.find_element(By.ID, "t-result").is_displayed())
        figures = driver.find_element(By.ID, "t-figures").text
        check("Threshold" in figures, f"the teach finished and shows its figures: {figures!r}")
        check("95th percentile" in figures and "expected overkill 5%" in figures,
              "the overkill entered in the wizard (5%) set the taught threshold")
        driver.find_element(By.ID, "t-shadow").click()
        WebDriverWait(driver, 120).until(
            lambda d: int(d.find_element(By.ID, "t-compare-state").get_attribute("data-parts") or 0) > 0)
        shadow = api(base, f"/api/v1/recipes/{recipe}/shadow", args.admin)
        check(shadow["state"] == "running" and shadow["parts"] > 0,
              f"the taught model runs in shadow: {shadow['parts']} parts compared, agreement {shadow['agreement']}")
        if args.shots:
            driver.execute_script("document.getElementById('t-compare').scrollIntoView({block: 'end'});")
            driver.save_screenshot(os.path.join(args.shots, "teach.png"))
        check(errors(driver) == [], "no console error or failed request in the teach wizard")

        # Stats: the charts are drawn and the CSV has a row per period.
        driver.get(base + "/stats")
        Select(driver.find_element(By.ID, "s-window")).select_by_value("1")
        Select(driver.find_element(By.ID, "s-bucket")).select_by_value("minute")

        # Parts keep coming: a new minute may begin while the page asks, so the CSV must have
        # as many rows as the API had minutes just before the page asked, or just after.
        def minute_buckets():
            since = str(int(time.time() * 1000) - 3600 * 1000)
            return len(api(base, "/api/v1/stats?bucket=minute&from=" + since, args.admin)["buckets"])
        before = minute_buckets()
        driver.find_element(By.CSS_SELECTOR, "#s-form button[type=submit]").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#s-trend polyline.yield")
                   and d.find_elements(By.CSS_SELECTOR, "#s-pareto rect.bar")
                   and d.find_elements(By.CSS_SELECTOR, "#s-cameras tbody tr"))
        rows = driver.execute_script("return statsCsv();").strip().split("\n")
        after = minute_buckets()
        check(rows[0].startswith("start,camera,inspections") and before <= len(rows) - 1 <= after,
              f"the stats page draws its charts and its CSV has a row per minute ({len(rows) - 1}; the API "
              f"had {before} before the page asked and {after} after)")
        driver.find_element(By.ID, "s-csv").click()
        if args.shots:
            driver.save_screenshot(os.path.join(args.shots, "stats.png"))
        check(errors(driver) == [], "no console error or failed request on the stats page")

        driver.get(base + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cameras tbody tr"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#disks li"))
        check("GiB" in driver.find_element(By.ID, "disks").text, "health shows the free disk of the store and archive")
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
