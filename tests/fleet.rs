//! Plant scale against the real engines: stations publish to NATS JetStream, hubs write to
//! PostgreSQL, recipes go back out (issue 17). NATS and PostgreSQL come from the Debian packages
//! the set-up installs; each test starts its own on loopback ports and stops them.

mod common;

use common::fleet::{Hub, Nats, Postgres, Station, hub_config, hub_rows, station_config, station_rows};
use common::wait_for;
use std::collections::BTreeMap;
use std::time::Duration;

/// Wait until the hub holds `n` inspections.
fn wait_rows(pg: &Postgres, n: usize, what: &str) {
    wait_for(
        Duration::from_secs(120),
        || format!("{n} rows in PostgreSQL ({what}); have {}", pg.count("SELECT COUNT(*) FROM inspections")),
        || (pg.count("SELECT COUNT(*) FROM inspections") as usize >= n).then_some(()),
    );
}

fn verdict_counts(rows: &[(i64, String, i64, String, String)]) -> [i64; 3] {
    let mut n = [0; 3];
    for r in rows {
        n[match r.3.as_str() {
            "OK" => 0,
            "NG" => 1,
            _ => 2,
        }] += 1;
    }
    n
}

#[test]
fn two_stations_one_hub_the_hub_holds_every_part_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let pg = Postgres::start(dir.path());
    let mut hub = Hub::start(&hub_config(dir.path(), "hub-a", &nats, &pg, 200));
    let a = station_config(dir.path(), "line-a", &nats, 60.0, 1, "products = { tile = \"default\" }\n");
    let b = station_config(dir.path(), "line-b", &nats, 60.0, 2, "products = { tile = \"default\" }\n");
    let (sa, sb) = (Station::start(&a, Some(240)), Station::start(&b, Some(180)));
    sa.wait();
    sb.wait();
    let rows_a = station_rows(&dir.path().join("line-a/station.db"));
    let rows_b = station_rows(&dir.path().join("line-b/station.db"));
    assert!(rows_a.len() >= 200 && rows_b.len() >= 150, "stores hold {} and {} rows", rows_a.len(), rows_b.len());
    wait_rows(&pg, rows_a.len() + rows_b.len(), "both stations' stores");

    // Part by part: the same rows, verdicts and counted defect classes.
    assert_eq!(hub_rows(&pg, "line-a"), rows_a);
    assert_eq!(hub_rows(&pg, "line-b"), rows_b);
    assert!(rows_a.iter().any(|r| r.3 == "NG") && rows_a.iter().any(|r| r.3 == "OK"), "both verdicts occur");

    // The plant's stats are the sum of the stations' own; the per-station breakdown is each.
    let stats = hub.get("/api/v1/stats?bucket=day");
    let (na, nb) = (verdict_counts(&rows_a), verdict_counts(&rows_b));
    let totals = &stats["totals"];
    assert_eq!(totals["inspections"], (rows_a.len() + rows_b.len()) as i64, "{stats}");
    assert_eq!(totals["ok"], na[0] + nb[0]);
    assert_eq!(totals["ng"], na[1] + nb[1]);
    assert_eq!(totals["failsafe"], na[2] + nb[2]);
    let per: BTreeMap<String, i64> = stats["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["station"].as_str().unwrap().to_string(), s["totals"]["inspections"].as_i64().unwrap()))
        .collect();
    assert_eq!(per, BTreeMap::from([("line-a".into(), rows_a.len() as i64), ("line-b".into(), rows_b.len() as i64)]));
    let defects: i64 = rows_a
        .iter()
        .chain(&rows_b)
        .map(|r| {
            r.4.split(',')
                .filter(|c| !c.is_empty())
                .map(|c| c.split(':').nth(1).unwrap().parse::<i64>().unwrap())
                .sum::<i64>()
        })
        .sum();
    let pareto: i64 = stats["classes"].as_array().unwrap().iter().map(|c| c["defects"].as_i64().unwrap()).sum();
    assert_eq!(pareto, defects, "the Pareto counts every counted defect once");
    // The same from the hourly roll-ups alone (a window of whole hours around the parts).
    let hour = linesight::fleet::now_ms() / 3_600_000 * 3_600_000;
    let whole = hub.get(&format!("/api/v1/stats?bucket=hour&from={}&to={}", hour - 3_600_000, hour + 3_600_000));
    assert_eq!(whole["totals"], stats["totals"], "roll-ups and rows agree");
    assert_eq!(whole["classes"], stats["classes"]);
    // One station alone, through the filter, equals its store.
    let only_b = hub.get("/api/v1/stats?bucket=minute&station=line-b");
    assert_eq!(only_b["totals"]["inspections"], rows_b.len() as i64);
    assert_eq!(only_b["totals"]["ng"], nb[1]);

    // Traceability: a listed inspection names its station and the row in that station's store.
    let ng = hub.get("/api/v1/inspections?station=line-a&verdict=ng&limit=5");
    let first = &ng["items"][0];
    assert_eq!(first["station"], "line-a");
    let row = rows_a.iter().find(|r| r.0 == first["station_row"].as_i64().unwrap()).unwrap();
    assert_eq!((row.2, row.3.as_str()), (first["seq"].as_i64().unwrap(), "NG"));
    let by_id = hub.get(&format!("/api/v1/inspections/{}", first["id"]));
    assert_eq!(by_id["seq"], first["seq"]);
    assert_eq!(by_id["product"], "tile", "the product its recipe makes, from [fleet] products");

    // The plant dashboard's queries (deploy/fleet/grafana/plant.json) on this data.
    plant_dashboard_answers(&pg, &[("line-a", rows_a.len()), ("line-b", rows_b.len())]);

    // The stations as the hub saw them: last seen, recipe and model per camera, outbox drained.
    let stations = hub.get("/api/v1/stations");
    let list = stations["stations"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{stations}");
    for s in list {
        assert_eq!(s["cameras"][0]["recipe"], "default", "{s}");
        assert_eq!(s["cameras"][0]["model_name"], "demo", "{s}");
        assert!(s["last_seen_unix_ms"].as_i64().is_some());
    }
    hub.stop();
}

/// Every query of the plant dashboard runs on the hub's PostgreSQL with Grafana's macros and the
/// `site` variable filled in as Grafana would, and answers rows; the per-line table counts each
/// station's parts.
fn plant_dashboard_answers(pg: &Postgres, parts: &[(&str, usize)]) {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::repo().join("deploy/fleet/grafana/plant.json")).unwrap())
            .unwrap();
    let now_s = linesight::fleet::now_ms() / 1000;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let sql = target["rawSql"]
                .as_str()
                .unwrap()
                .replace("$__unixEpochFrom()", &(now_s - 86_400).to_string())
                .replace("$__unixEpochTo()", &(now_s + 60).to_string())
                .replace("$site", "'plant1'");
            let rows = pg.query(&sql);
            assert!(!rows.is_empty(), "panel {title:?} answers no rows: {sql}");
            if title == "Lines over the range" {
                let got: Vec<(String, usize)> = rows.iter().map(|r| (r[1].clone(), r[2].parse().unwrap())).collect();
                let want: Vec<(String, usize)> = parts.iter().map(|(s, n)| (s.to_string(), *n)).collect();
                assert_eq!(got, want, "panel {title:?}");
            }
        }
    }
}

#[test]
fn the_deployment_configs_are_accepted_by_the_real_tools() {
    for conf in ["single.conf", "nats-1.conf", "nats-2.conf", "nats-3.conf", "leaf-site.conf"] {
        let path = common::repo().join("deploy/fleet/nats").join(conf);
        let out = std::process::Command::new("nats-server").args(["-t", "-c"]).arg(&path).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "nats-server refuses {conf}: {said}");
    }
    let (ok, _, err) = common::output(common::linesight().args(["hub", "--config", "/nonexistent/hub.toml"]));
    assert!(!ok && err.contains("cannot read the hub config"), "{err}");
    linesight::hub::HubConfig::load(&common::repo().join("deploy/fleet/hub.toml"))
        .expect("deploy/fleet/hub.toml loads");
}

#[test]
fn a_site_behind_a_leaf_node_loses_nothing_while_its_link_to_the_plant_is_down() {
    let dir = tempfile::tempdir().unwrap();
    // The plant's server (JetStream, accepting leaf nodes) and the site's leaf node (no JetStream),
    // as deploy/fleet/nats/single.conf and leaf-site.conf lay them out.
    let (plant_port, leaf_listen, site_port) =
        (common::fleet::free_port(), common::fleet::free_port(), common::fleet::free_port());
    let store = dir.path().join("plant-js");
    let mut plant = Nats::from_config(
        &dir.path().join("plant.conf"),
        plant_port,
        &format!(
            "listen: 127.0.0.1:{plant_port}\njetstream {{ store_dir: \"{}\" }}\nleafnodes {{ listen: 127.0.0.1:{leaf_listen} }}\n",
            store.display()
        ),
    );
    let site = Nats::from_config(
        &dir.path().join("site.conf"),
        site_port,
        &format!(
            "listen: 127.0.0.1:{site_port}\nleafnodes {{ remotes: [ {{ urls: [\"nats-leaf://127.0.0.1:{leaf_listen}\"] }} ] }}\n"
        ),
    );
    let pg = Postgres::start(dir.path());
    let hub_cfg = hub_config(dir.path(), "hub-a", &plant, &pg, 200);
    let mut hub = Hub::start(&hub_cfg);
    // The station knows only its site's leaf node.
    let cfg = station_config(dir.path(), "line-b", &site, 25.0, 3, "");
    let mut station = Station::start(&cfg, None);
    let rows = || pg.count("SELECT COUNT(*) FROM inspections");
    wait_for(Duration::from_secs(60), || "records through the leaf node".into(), || (rows() > 20).then_some(()));

    // The plant unreachable from the site: the station keeps its records; they arrive after.
    plant.down();
    std::thread::sleep(Duration::from_secs(10));
    let held = metric(station.admin, "linesight_fleet_outbox_unsent");
    assert!(held >= 25.0, "the station holds what the plant did not acknowledge: {held}");
    plant.up();
    std::thread::sleep(Duration::from_secs(3));
    let status = common::fleet::terminate(&mut station.child);
    assert!(status.success(), "{}", station.log.lock().unwrap());
    let stored = station_rows(&dir.path().join("line-b/station.db"));
    wait_rows(&pg, stored.len(), "the site's records after the link came back");
    assert_eq!(hub_rows(&pg, "line-b"), stored, "every record of the site, once");
    hub.stop();
}

/// How long each outage lasts (the issue's 60 s; shorter to iterate locally).
fn outage() -> Duration {
    let s = std::env::var("LINESIGHT_FLEET_OUTAGE_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    if s != 60 {
        eprintln!("LINESIGHT_FLEET_OUTAGE_S={s}: outages of {s} s, not the 60 s of the test's contract");
    }
    Duration::from_secs(s)
}

/// A metric's value from a station's admin `/metrics`.
fn metric(admin: std::net::SocketAddr, name: &str) -> f64 {
    let (_, body) = common::http_get(admin, "/metrics").unwrap();
    body.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn hub_down_then_nats_down_then_a_station_killed_every_inspection_lands_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(dir.path());
    let pg = Postgres::start(dir.path());
    let hub_cfg = hub_config(dir.path(), "hub-a", &nats, &pg, 500);
    let mut hub = Hub::start(&hub_cfg);
    let a = station_config(dir.path(), "line-a", &nats, 25.0, 1, "");
    let b = station_config(dir.path(), "line-b", &nats, 25.0, 2, "");
    let mut sa = Station::start(&a, None);
    let mut sb = Station::start(&b, None);
    let pause = outage();
    let rows = || pg.count("SELECT COUNT(*) FROM inspections");
    wait_for(Duration::from_secs(60), || "the first rows at the hub".into(), || (rows() > 20).then_some(()));

    // 1. The hub away: the stream keeps the records; the hub takes them up when it is back.
    hub.stop();
    let before = rows();
    std::thread::sleep(pause);
    assert_eq!(rows(), before, "nothing is written while the hub is down");
    let mut hub = Hub::start(&hub_cfg);

    // 2. NATS away: the stations keep their records in the outbox (and say so).
    nats.down();
    std::thread::sleep(pause);
    let held = metric(sa.admin, "linesight_fleet_outbox_unsent");
    assert!(held >= 25.0, "station a holds its unsent records in the outbox: {held}");
    assert_eq!(metric(sa.admin, "linesight_fleet_link_up"), 0.0);
    nats.up();
    wait_for(
        Duration::from_secs(60),
        || "station a's outbox to drain".into(),
        || (metric(sa.admin, "linesight_fleet_outbox_unsent") < 25.0).then_some(()),
    );

    // 3. A station killed mid-stride and started again: it resumes from its outbox cursor.
    sa.child.0.kill().unwrap();
    sa.child.0.wait().unwrap();
    sa = Station::start(&a, None);
    std::thread::sleep(Duration::from_secs(5));

    for s in [&mut sa, &mut sb] {
        let status = common::fleet::terminate(&mut s.child);
        assert!(status.success(), "station exit {status}; log:\n{}", s.log.lock().unwrap());
    }
    let rows_a = station_rows(&dir.path().join("line-a/station.db"));
    let rows_b = station_rows(&dir.path().join("line-b/station.db"));
    wait_rows(&pg, rows_a.len() + rows_b.len(), "every stored inspection");
    std::thread::sleep(Duration::from_secs(2)); // anything written twice would show now
    assert_eq!(hub_rows(&pg, "line-a"), rows_a, "station a: every row once");
    assert_eq!(hub_rows(&pg, "line-b"), rows_b, "station b: every row once");
    assert_eq!(pg.count("SELECT COUNT(*) - COUNT(DISTINCT (station, store_uid, station_row)) FROM inspections"), 0);
    // The stations' stream carried republished records after the kill; the hub wrote none twice.
    hub.stop();
}

#[test]
fn two_hubs_share_the_consumer_and_write_no_row_twice() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let pg = Postgres::start(dir.path());
    let mut h1 = Hub::start(&hub_config(dir.path(), "hub-1", &nats, &pg, 25));
    let mut h2 = Hub::start(&hub_config(dir.path(), "hub-2", &nats, &pg, 25));
    let a = station_config(dir.path(), "line-a", &nats, 150.0, 1, "");
    let b = station_config(dir.path(), "line-b", &nats, 150.0, 2, "");
    let (sa, sb) = (Station::start(&a, Some(600)), Station::start(&b, Some(600)));
    sa.wait();
    sb.wait();
    let rows_a = station_rows(&dir.path().join("line-a/station.db"));
    let rows_b = station_rows(&dir.path().join("line-b/station.db"));
    wait_rows(&pg, rows_a.len() + rows_b.len(), "both stores through two hubs");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(hub_rows(&pg, "line-a"), rows_a);
    assert_eq!(hub_rows(&pg, "line-b"), rows_b);
    let by_hub: BTreeMap<String, i64> = pg
        .query("SELECT ingested_by, COUNT(*) FROM inspections GROUP BY 1")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(by_hub.keys().collect::<Vec<_>>(), ["hub-1", "hub-2"], "both hubs wrote: {by_hub:?}");
    assert!(by_hub.values().all(|n| *n > 0));
    // Each hub's own count of what it wrote adds up to the rows: nothing twice, nothing lost.
    let ingested = |h: &Hub| {
        let (_, body) = common::http_get(h.api, "/metrics").unwrap();
        body.lines().find_map(|l| l.strip_prefix("linesight_hub_ingested_total ")?.parse::<i64>().ok()).unwrap()
    };
    assert_eq!(ingested(&h1) + ingested(&h2), (rows_a.len() + rows_b.len()) as i64);
    h1.stop();
    h2.stop();
}

/// Publish raw payloads on a subject of the stream, as a foreign or broken client would.
fn publish_raw(nats: &Nats, messages: &[(&str, Vec<u8>)]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        for (subject, payload) in messages {
            js.publish(subject.to_string(), payload.clone().into()).await.unwrap().await.unwrap();
        }
        client.flush().await.unwrap();
    });
}

#[test]
fn malformed_and_foreign_messages_are_parked_and_the_hub_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let pg = Postgres::start(dir.path());
    let mut hub = Hub::start(&hub_config(dir.path(), "hub-a", &nats, &pg, 100));
    let good = |row: i64, site: &str| {
        serde_json::to_vec(&linesight::fleet::wire::Inspection {
            v: 1,
            site: site.into(),
            station: "line-x".into(),
            store_uid: "0123456789abcdef".into(),
            row,
            camera: "cam".into(),
            seq: row,
            part_id: None,
            captured_ms: linesight::fleet::now_ms(),
            decided_ms: linesight::fleet::now_ms(),
            latency_ms: 5.0,
            verdict: linesight::fleet::wire::Verdict::Ok,
            failsafe_cause: None,
            image_score: Some(0.1),
            threshold: Some(0.5),
            width: 64,
            height: 64,
            mm_per_px: None,
            defects_truncated: 0,
            recipe: Some("default".into()),
            product: None,
            model_name: "demo".into(),
            model_sha256: "ab".into(),
            image_path: None,
            defects: vec![],
            published_ms: linesight::fleet::now_ms(),
        })
        .unwrap()
    };
    let subject = "linesight.plant1.line-x.inspections";
    publish_raw(
        &nats,
        &[
            (subject, b"\x00\x01 not json".to_vec()),
            (subject, br#"{"v": 1, "site": "plant1"}"#.to_vec()),
            (subject, good(1, "plant2")), // names another site than its subject
            ("linesight.plant1.line-x.status", b"[]".to_vec()),
            (subject, good(2, "plant1")),
        ],
    );
    wait_for(
        Duration::from_secs(30),
        || "the good record after the bad ones".into(),
        || (pg.count("SELECT COUNT(*) FROM inspections") == 1).then_some(()),
    );
    let parked = hub.get("/api/v1/parked");
    assert_eq!(parked["total"], 4, "{parked}");
    let reasons: Vec<&str> =
        parked["items"].as_array().unwrap().iter().map(|p| p["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("names plant2.line-x")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("not a linesight inspection")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("not a linesight station status")), "{reasons:?}");
    let (_, metrics) = common::http_get(hub.api, "/metrics").unwrap();
    assert!(metrics.contains("linesight_hub_parked_total 4"), "{metrics}");
    // Parked means acknowledged: nothing is waiting to be delivered again.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pending = rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let stream = js.get_stream("LINESIGHT").await.unwrap();
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("hub").await.unwrap();
        let info = consumer.get_info().await.unwrap();
        (info.num_ack_pending, info.num_pending)
    });
    assert_eq!(pending, (0, 0), "(unacknowledged, undelivered) messages");
    hub.stop();
}

#[test]
fn a_recipe_published_while_a_station_is_offline_reaches_it_verified_and_runs_in_shadow() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let pg = Postgres::start(dir.path());
    let hub_cfg = hub_config(dir.path(), "hub-a", &nats, &pg, 100);
    let mut hub = Hub::start(&hub_cfg);
    let cfg = station_config(dir.path(), "line-a", &nats, 30.0, 1, "products = { tile = \"default\" }\n");
    // Known to the hub, then offline.
    Station::start(&cfg, Some(30)).wait();

    let candidate = common::edited_demo_model(dir.path(), |m| m.replace("name = \"demo\"", "name = \"demo-v2\""));
    let (ok, out, err) = common::output(
        common::linesight()
            .args(["publish-recipe", "--config"])
            .arg(&hub_cfg)
            .args(["--product", "tile", "--package"])
            .arg(&candidate),
    );
    assert!(ok, "publish-recipe failed: {err}");
    let published: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sha = published["sha256"].as_str().unwrap().to_string();
    assert_eq!(published["model_name"], "demo-v2");

    // Back online: it fetches the recipe, verifies the bytes and runs it as the shadow.
    let station = Station::start(&cfg, None);
    let api = station.api();
    let shadow = wait_for(
        Duration::from_secs(60),
        || format!("the shadow; log:\n{}", station.log.lock().unwrap()),
        || {
            let (status, body) = common::http_get(api, "/api/v1/recipes/default/shadow").ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && v["state"] == "running" && v["counts"]["compared"].as_u64()? > 0).then_some(v)
        },
    );
    assert!(shadow["candidate"].to_string().contains(&sha), "the shadow runs the published package: {shadow}");
    assert!(shadow["candidate"].to_string().contains("demo-v2"), "{shadow}");
    // The live model is untouched: a proven recipe from elsewhere waits for a promotion here.
    let (_, recipes) = common::http_get(api, "/api/v1/recipes").unwrap();
    assert!(recipes.contains("\"name\":\"demo\""), "{recipes}");

    // The hub sees what the station fetched and did.
    let fetched = wait_for(
        Duration::from_secs(30),
        || "the station's report at the hub".into(),
        || {
            let s = hub.get("/api/v1/stations");
            let f = s["stations"][0]["recipes_fetched"].as_array()?.first()?.clone();
            (f["sha256"] == sha.as_str()).then_some(f)
        },
    );
    assert_eq!((fetched["outcome"].as_str(), fetched["action"].as_str()), (Some("ok"), Some("shadow")));

    // A package whose bytes do not match the published hash is refused, and nothing changes.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let forged = "f".repeat(64);
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let objects = js.get_object_store("linesight_packages").await.unwrap();
        objects.put(forged.as_str(), &mut &b"not the package"[..]).await.unwrap();
        let kv = js.get_key_value("linesight_recipes").await.unwrap();
        let mut value = published.clone();
        value["sha256"] = forged.clone().into();
        kv.put("tile", serde_json::to_vec(&value).unwrap().into()).await.unwrap();
    });
    let db = dir.path().join("line-a/station.db");
    let outcome = wait_for(
        Duration::from_secs(30),
        || "the forged recipe's outcome".into(),
        || {
            let conn = rusqlite::Connection::open(&db).ok()?;
            conn.query_row("SELECT outcome FROM fleet_recipes WHERE sha256 = ?1", [&forged], |r| r.get::<_, String>(0))
                .ok()
        },
    );
    assert!(outcome.contains("refused"), "{outcome}");
    let (_, shadow) = common::http_get(api, "/api/v1/recipes/default/shadow").unwrap();
    assert!(shadow.contains(&sha), "the verified candidate still runs: {shadow}");
    drop(station);
    hub.stop();
}

#[test]
fn a_recipe_with_rules_goes_live_where_the_station_policy_says_activate() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let pg = Postgres::start(dir.path());
    let hub_cfg = hub_config(dir.path(), "hub-a", &nats, &pg, 100);
    let mut hub = Hub::start(&hub_cfg);
    let cfg = station_config(
        dir.path(),
        "line-a",
        &nats,
        40.0,
        1,
        "products = { tile = \"default\" }\nrecipe_policy = \"activate\"\n",
    );
    let station = Station::start(&cfg, None);
    let api = station.api(); // listening once the store is open
    let db = dir.path().join("line-a/station.db");
    let verdicts_of = |model: &str| -> Vec<String> {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn
            .prepare("SELECT i.verdict FROM inspections i JOIN models m ON m.id = i.model_id WHERE m.name = ?1")
            .unwrap();
        stmt.query_map([model], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    wait_for(
        Duration::from_secs(60),
        || "NG parts under the station's own rules".into(),
        || verdicts_of("demo").iter().any(|v| v == "NG").then_some(()),
    );

    // Rules no synthetic defect passes: under them every part is OK.
    let candidate = common::edited_demo_model(dir.path(), |m| m.replace("name = \"demo\"", "name = \"demo-v2\""));
    let rules = dir.path().join("rules.json");
    std::fs::write(&rules, r#"[{"class": "defect", "min_score": 0.5, "min_area_px": 1000000}]"#).unwrap();
    let (ok, _, err) = common::output(
        common::linesight()
            .args(["publish-recipe", "--config"])
            .arg(&hub_cfg)
            .args(["--product", "tile", "--package"])
            .arg(&candidate)
            .arg("--rules")
            .arg(&rules),
    );
    assert!(ok, "publish-recipe failed: {err}");
    let after = wait_for(
        Duration::from_secs(60),
        || format!("parts under demo-v2; log:\n{}", station.log.lock().unwrap()),
        || {
            let v = verdicts_of("demo-v2");
            (v.len() >= 40).then_some(v)
        },
    );
    assert!(after.iter().all(|v| v == "OK"), "the published rules judge the parts: {after:?}");
    let (_, recipes) = common::http_get(api, "/api/v1/recipes").unwrap();
    assert!(recipes.contains("\"name\":\"demo-v2\"") && recipes.contains("1000000"), "{recipes}");
    drop(station);
    hub.stop();
}
