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
    wait_for(Duration::from_secs(120), || format!("{n} rows in PostgreSQL ({what}); have {}", pg.count("SELECT COUNT(*) FROM inspections")), || {
        (pg.count("SELECT COUNT(*) FROM inspections") as usize >= n).then_some(())
    });
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
    let a = station_config(dir.path(), "line-a", &nats, 60.0, 1, "");
    let b = station_config(dir.path(), "line-b", &nats, 60.0, 2, "");
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
    let defects: i64 = rows_a.iter().chain(&rows_b).map(|r| r.4.split(',').filter(|c| !c.is_empty()).map(|c| c.split(':').nth(1).unwrap().parse::<i64>().unwrap()).sum::<i64>()).sum();
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
