//! The OpenAPI 3 description of the API, served at `/api/v1/openapi.json`. A test checks it
//! against real responses: every path answers, with the properties marked required.

use serde_json::{Value, json};

fn param(name: &str, place: &str, kind: &str, description: &str) -> Value {
    json!({ "name": name, "in": place, "required": place == "path", "schema": { "type": kind }, "description": description })
}

fn ok(schema: &str) -> Value {
    json!({
        "200": { "description": "OK", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } },
        "400": { "$ref": "#/components/responses/Error" },
        "401": { "$ref": "#/components/responses/Error" },
    })
}

pub fn document() -> Value {
    let (mut doc, review) = (base(), review());
    extend(&mut doc["paths"], &review["paths"]);
    extend(&mut doc["components"]["schemas"], &review["schemas"]);
    doc
}

/// Add `more`'s entries to the object `target`.
fn extend(target: &mut Value, more: &Value) {
    if let (Some(target), Some(more)) = (target.as_object_mut(), more.as_object()) {
        target.extend(more.clone());
    }
}

fn query_params() -> (Value, Value, Value) {
    let time = "unix milliseconds, or RFC 3339 (2024-05-01T06:00:00Z)";
    (
        param("from", "query", "string", time),
        param("to", "query", "string", time),
        param("camera", "query", "string", "camera id"),
    )
}

/// The review loop's paths and schemas (their own `json!`: one is too deep for the macro).
fn review() -> Value {
    let (from, to, camera) = query_params();
    json!({
        "paths": {
            "/api/v1/inspections/{id}/review": { "post": {
                "summary": "Label an inspection for review (operator token): defect (rejected or missed), good (a false reject) or unsure",
                "description": "Every label is kept with who (the token's name) and when; the latest per inspection counts. Body: {\"label\": \"defect\" | \"good\" | \"unsure\", \"class\"?: string, \"note\"?: string (≤ 1000 characters)}.",
                "parameters": [param("id", "path", "integer", "inspection id")],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewReview" } } } },
                "responses": {
                    "201": { "description": "Stored", "content": { "application/json": { "schema": { "type": "object", "required": ["review"], "properties": { "review": { "$ref": "#/components/schemas/Review" } } } } } },
                    "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" },
                    "403": { "$ref": "#/components/responses/Error" }, "404": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/review/queue": { "get": {
                "summary": "What to review next: unreviewed NG, fail-safe and archived OK inspections, nearest their threshold first",
                "description": "Window [from, to): to defaults to now, from to 7 days before to. Inspections with an image score come first, by |score - threshold| / threshold; then the rest (fail-safe, models without an image score), newest first. With label: the parts whose latest label is that one instead of the unlabelled ones.",
                "parameters": [from, to, camera, param("recipe", "query", "string", "only this recipe's parts"),
                    param("class", "query", "string", "only parts with a region of this defect class"),
                    param("label", "query", "string", "defect, good or unsure: parts labelled so (default: unlabelled parts)"),
                    param("limit", "query", "integer", "1..=1000, default 100")],
                "responses": ok("ReviewQueue") } },
            "/api/v1/recipes": { "get": {
                "summary": "The station's recipes: model, threshold and the cameras running each",
                "responses": ok("Recipes") } },
            "/api/v1/recipes/{name}": { "patch": {
                "summary": "Change a recipe's image-score threshold (anomaly models) and/or its decision rules while the station runs (admin token); audited",
                "description": "Body: {\"threshold\": number} and/or {\"rules\": [rules as in [[rule]]]}. A threshold is in force from the next frame decided; every inspection records the threshold it was judged against. New rules (every key known, checked like a config's) are an install of the recipe's model built with them: between two frames of each camera (first_seq per camera in the answer), the rules before kept for .../rollback; rules the model cannot use change nothing (422). A change is all or nothing.",
                "parameters": [param("name", "path", "string", "recipe name")],
                "responses": {
                    "200": { "description": "The recipe as GET /api/v1/recipes lists it", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" },
                    "403": { "$ref": "#/components/responses/Error" }, "404": { "$ref": "#/components/responses/Error" },
                    "422": { "$ref": "#/components/responses/Error" }, "503": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/recipes/{name}/activate": { "post": {
                "summary": "Switch cameras to a recipe (operator token); audited",
                "description": "Body: {\"cameras\": [camera ids]} or empty (all cameras). The switch takes effect between two frames of each camera: no frame is lost or judged by a mix of recipes. Answers once each camera has captured a frame under the new recipe (at most 5 s): first_seq maps each camera to that frame's sequence number (null: no frame yet; its next frame is judged under the new recipe).",
                "parameters": [param("name", "path", "string", "recipe name")],
                "responses": {
                    "200": { "description": "In effect", "content": { "application/json": { "schema": { "type": "object", "required": ["recipe", "first_seq"], "properties": {
                        "recipe": { "type": "string" }, "first_seq": { "type": "object", "additionalProperties": { "type": ["integer", "null"] } } } } } } },
                    "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" },
                    "403": { "$ref": "#/components/responses/Error" }, "404": { "$ref": "#/components/responses/Error" },
                    "503": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/recipes/{name}/model": { "post": {
                "summary": "Install a new model for a recipe while the station runs (admin token); audited",
                "description": "Body: {\"package\": \"a model package folder on the station\"} (relative paths start at the config's folder). The package is loaded, checked against the recipe's rules and warmed up in every worker in the background; then the cameras running the recipe move to it between two frames (first_seq per camera). The model it replaces stays loaded for .../rollback. A package that cannot be used changes nothing and says why (422).",
                "parameters": [param("name", "path", "string", "recipe name")],
                "responses": {
                    "200": { "description": "In effect", "content": { "application/json": { "schema": { "type": "object", "required": ["recipe", "first_seq"] } } } },
                    "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" },
                    "403": { "$ref": "#/components/responses/Error" }, "404": { "$ref": "#/components/responses/Error" },
                    "422": { "$ref": "#/components/responses/Error" }, "503": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/recipes/{name}/rollback": { "post": {
                "summary": "Go back to the model the recipe ran before its last install or rollback (admin token); audited",
                "parameters": [param("name", "path", "string", "recipe name")],
                "responses": {
                    "200": { "description": "In effect", "content": { "application/json": { "schema": { "type": "object", "required": ["recipe", "first_seq"] } } } },
                    "401": { "$ref": "#/components/responses/Error" }, "403": { "$ref": "#/components/responses/Error" },
                    "404": { "$ref": "#/components/responses/Error" }, "409": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/recipes/{name}/shadow": {
                "get": {
                    "summary": "The recipe's shadow model (running, else its latest run): candidate, parts offered / skipped / compared, and over the newest `window` parts the live × candidate verdict matrix, agreement rate and the parts where they differ; state none | running | stopping (stopped, still writing its last comparisons) | stopped",
                    "parameters": [param("name", "path", "string", "recipe name"), param("window", "query", "integer", "parts the report covers, newest first (default 1000, at most 100000)")],
                    "responses": {
                        "200": { "description": "The shadow", "content": { "application/json": { "schema": { "type": "object", "required": ["recipe", "state"] } } } },
                        "400": { "$ref": "#/components/responses/Error" }, "404": { "$ref": "#/components/responses/Error" },
                        "503": { "$ref": "#/components/responses/Error" },
                    } },
                "post": {
                    "summary": "Start a candidate model beside the recipe's live model on the same frames (admin token); audited",
                    "description": "Body: {\"package\": \"a model package folder on the station\"}. The candidate judges copies of the recipe's parts at the lowest CPU priority (SCHED_IDLE): when the CPU is short it skips parts (counted) instead of slowing the line. Its verdicts and scores go to the store, never to the line. Replaces the recipe's running shadow. A package that cannot be loaded changes nothing (422).",
                    "parameters": [param("name", "path", "string", "recipe name")],
                    "responses": {
                        "201": { "description": "Started", "content": { "application/json": { "schema": { "type": "object", "required": ["run", "model"] } } } },
                        "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" },
                        "403": { "$ref": "#/components/responses/Error" }, "404": { "$ref": "#/components/responses/Error" },
                        "422": { "$ref": "#/components/responses/Error" }, "503": { "$ref": "#/components/responses/Error" },
                    } },
                "delete": {
                    "summary": "Stop the recipe's shadow model (admin token); its comparisons stay; audited",
                    "parameters": [param("name", "path", "string", "recipe name")],
                    "responses": {
                        "200": { "description": "Stopped" },
                        "401": { "$ref": "#/components/responses/Error" }, "403": { "$ref": "#/components/responses/Error" },
                        "404": { "$ref": "#/components/responses/Error" },
                    } },
            },
            "/api/v1/recipes/{name}/shadow/promote": { "post": {
                "summary": "Make the running shadow candidate the recipe's model (admin token): installed as POST .../model, between two frames, the old model kept for .../rollback; audited",
                "parameters": [param("name", "path", "string", "recipe name")],
                "responses": {
                    "200": { "description": "In effect", "content": { "application/json": { "schema": { "type": "object", "required": ["recipe", "first_seq"] } } } },
                    "401": { "$ref": "#/components/responses/Error" }, "403": { "$ref": "#/components/responses/Error" },
                    "404": { "$ref": "#/components/responses/Error" }, "409": { "$ref": "#/components/responses/Error" },
                    "422": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/session": { "get": {
                "summary": "Who the request's bearer token is (open to all, always 200): the web UI asks it first",
                "responses": {
                    "200": { "description": "The caller", "content": { "application/json": { "schema": { "type": "object", "required": ["signed_in", "role", "reads_need_token"] } } } },
                } } },
            "/api/v1/health": { "get": {
                "summary": "Ready or not, and everything not ready yet (as the admin listener's /readyz); the line links, records dropped on the way to the outputs, capture → verdict latency of the latest 500 parts (ms), free disk of the store and archive, the Grafana dashboard's address",
                "responses": {
                    "200": { "description": "Readiness", "content": { "application/json": { "schema": { "type": "object", "required": ["ready", "not_ready"] } } } },
                    "401": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/live": { "get": {
                "summary": "The live view: server-sent events, one `picture` event per camera's latest part (JSON: camera, seq, verdict, score, width, height, boxes, jpeg in base64), at most 8 per second per camera; a slow reader gets the newest, never a backlog",
                "responses": {
                    "200": { "description": "Event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "401": { "$ref": "#/components/responses/Error" }, "503": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/teach": { "post": {
                "summary": "Teach a recipe a new model in the background, at low priority (admin token); audited",
                "description": "Body: {\"recipe\": NAME, \"images\": \"a folder of good images on the station\"}, {\"recipe\": NAME, \"archived_ok\": true} (that recipe's OK parts the archive kept, the newest 2000, at least 8) or {\"recipe\": NAME, \"camera\": ID, \"parts\": N} (the camera's next N parts, 8..=2000, which the operator vouches are good; fail-safe parts left out; the job state is \"capturing\" with a count meanwhile), plus \"install\": true to install the model when done (as POST .../model) or \"shadow\": true to run it as the recipe's shadow candidate (as POST .../shadow). Teach settings: the recipe's [recipe.teach] (or [model.teach]), else the station defaults; \"defects\": a folder of labelled defective images on the station, \"max_overkill\" or \"target_escape\" (shares in [0, 0.5)) override them for this job. The package is written to taught/<recipe>-<unix ms> beside the result store. Answers 202 with the job id.",
                "responses": {
                    "202": { "description": "Started", "content": { "application/json": { "schema": { "type": "object", "required": ["id", "state"] } } } },
                    "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" },
                    "403": { "$ref": "#/components/responses/Error" }, "404": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/teach/{id}": { "get": {
                "summary": "A teach job: running, done (with the teach's own validation figures, threshold, warnings, and whether it was installed) or failed (with why)",
                "parameters": [param("id", "path", "integer", "job id")],
                "responses": ok("TeachJob") } },
            "/api/v1/audit": { "get": {
                "summary": "Changes made through the API, newest first: who, when, what, old and new",
                "parameters": [param("limit", "query", "integer", "1..=1000, default 100")],
                "responses": ok("Audit") } },
            "/api/v1/operating-point": { "get": {
                "summary": "Escape and overkill measured on the reviewed inspections of one model, at its current threshold and across thresholds",
                "description": "Latest label per inspection; defect = positive, good = negative; unsure and unscored (fail-safe) labels are counted apart. Escape: defects scoring below the threshold; overkill: goods at or above it. Intervals: two-sided 95% Clopper-Pearson. The labelled OK parts are the archive's sample, so rates weigh them as reviewed, not by how many OK parts they stand for.",
                "parameters": [param("recipe", "query", "string", "recipe name: its newest inspection's model, its inspections only"),
                    param("model", "query", "string", "model name or sha256 (prefix of 8+ digits); default: the newest inspection's")],
                "responses": ok("OperatingPoint") },
                "post": {
                "summary": "Set a recipe's threshold to meet a target on the reviewed parts (admin token); audited",
                "description": "Body: {\"target_escape\": x} (the highest threshold that lets at most that share of labelled defects pass) or {\"max_overkill\": y} (the lowest that rejects at most that share of labelled goods); shares in [0, 1). ?recipe=NAME (optional with one recipe). In force from the next frame decided; answers the operating point there.",
                "parameters": [param("recipe", "query", "string", "recipe name")],
                "responses": ok("OperatingPoint") } },
        },
        "schemas": {
                "Recipes": { "type": "object", "required": ["recipes"], "properties": { "recipes": { "type": "array", "items": {
                    "type": "object", "required": ["name", "model", "cameras", "threshold"], "properties": {
                        "name": { "type": "string" },
                        "model": { "type": "object", "required": ["name", "sha256"] },
                        "cameras": { "type": "array", "items": { "type": "string" }, "description": "cameras running it" },
                        "threshold": { "type": ["number", "null"], "description": "anomaly models: the image-score threshold in force" } } } } } },
                "Audit": { "type": "object", "required": ["items"], "properties": { "items": { "type": "array", "items": {
                    "type": "object", "required": ["id", "at_unix_ms", "at", "who", "action", "target", "old", "new"], "properties": {
                        "id": { "type": "integer" }, "at_unix_ms": { "type": "integer" }, "at": { "type": "string" },
                        "who": { "type": "string" }, "action": { "type": "string" }, "target": { "type": "string" },
                        "old": { "type": ["string", "null"] }, "new": { "type": ["string", "null"] } } } } } },
                "TeachJob": { "type": "object", "required": ["id", "recipe", "state"], "properties": {
                    "id": { "type": "integer" }, "recipe": { "type": "string" },
                    "state": { "type": "string", "enum": ["capturing", "running", "done", "failed"] },
                    "captured": { "type": "integer", "description": "capturing: the camera's parts taken so far" },
                    "parts": { "type": "integer", "description": "capturing: the parts asked for" },
                    "stage": { "type": "string", "description": "running: the teach's current step, in words" },
                    "elapsed_s": { "type": "number", "description": "until done: seconds since the job started" },
                    "package": { "type": "string" }, "threshold": { "type": "number" },
                    "teach": { "type": "object", "description": "as [teach] in the package's model.toml" },
                    "installed": { "type": "boolean" }, "error": { "type": "string" } } },
                "NewReview": { "type": "object", "required": ["label"], "properties": {
                    "label": { "type": "string", "enum": ["defect", "good", "unsure"] },
                    "class": { "type": "string" }, "note": { "type": "string" } } },
                "Review": { "type": "object", "required": ["id", "label", "reviewer", "reviewed_unix_ms", "reviewed_at"], "properties": {
                    "id": { "type": "integer" }, "label": { "type": "string" }, "class": { "type": ["string", "null"] },
                    "note": { "type": ["string", "null"] }, "reviewer": { "type": "string", "description": "the token's name" },
                    "reviewed_unix_ms": { "type": "integer" }, "reviewed_at": { "type": "string" } } },
                "ReviewQueue": { "type": "object", "required": ["from_unix_ms", "to_unix_ms", "items"], "properties": {
                    "from_unix_ms": { "type": "integer" }, "to_unix_ms": { "type": "integer" },
                    "items": { "type": "array", "items": { "type": "object",
                        "required": ["id", "camera", "verdict", "image_score", "threshold", "margin", "has_image", "has_heat", "classes"],
                        "properties": { "id": { "type": "integer" }, "camera": { "type": "string" },
                            "verdict": { "type": "string" }, "image_score": { "type": ["number", "null"] },
                            "threshold": { "type": ["number", "null"] },
                            "margin": { "type": ["number", "null"], "description": "(score - threshold) / threshold" },
                            "has_image": { "type": "boolean" },
                            "has_heat": { "type": "boolean", "description": "the archive keeps its heat map (image?heat=true)" },
                            "recipe": { "type": ["string", "null"] },
                            "label": { "type": ["string", "null"], "description": "the latest label, with ?label=" },
                            "classes": { "type": "array", "items": { "type": "string" }, "description": "its regions' defect classes" } } } } } },
                "RatePoint": { "type": "object", "required": ["threshold", "escape_rate", "overkill_rate"], "properties": {
                    "threshold": { "type": "number" }, "escape_rate": { "type": ["number", "null"] },
                    "overkill_rate": { "type": ["number", "null"] } } },
                "OperatingPoint": { "type": "object", "required": ["model", "current", "points", "defects", "goods"], "properties": {
                    "model": { "type": "object", "required": ["name", "sha256"] },
                    "current": { "description": "at the threshold of the model's newest inspection (null when it has none), with escape_interval and overkill_interval",
                        "anyOf": [ { "$ref": "#/components/schemas/RatePoint" }, { "type": "null" } ] },
                    "points": { "type": "array", "items": { "$ref": "#/components/schemas/RatePoint" } },
                    "defects": { "type": "integer" }, "goods": { "type": "integer" },
                    "unsure": { "type": "integer" }, "unscored": { "type": "integer" } } },
        },
    })
}

fn base() -> Value {
    let (from, to, camera) = query_params();
    let counts = json!({
        "type": "object",
        "required": ["inspections", "ok", "ng", "failsafe", "yield", "ng_rate", "failsafe_rate"],
        "properties": {
            "inspections": { "type": "integer" }, "ok": { "type": "integer" }, "ng": { "type": "integer" },
            "failsafe": { "type": "integer" },
            "yield": { "type": ["number", "null"], "description": "ok / inspections (null when none)" },
            "ng_rate": { "type": ["number", "null"] }, "failsafe_rate": { "type": ["number", "null"] },
        },
    });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "linesight API", "version": env!("CARGO_PKG_VERSION"),
            "description": "Defect statistics and traceability from the result store. Query timestamps: unix ms or RFC 3339; response timestamps: unix ms (*_unix_ms) plus RFC 3339 UTC copies. Errors: {\"error\": message}. Tokens: Authorization: Bearer <token> (the header only; no cookie ever authorises). Reads are open unless [api] token is set (then any known token reads); review labels need an operator token, any other write an admin token ([[api.tokens]] hold each token's SHA-256 and role; LINESIGHT_API_TOKEN in the station's environment is an admin token). Refusals: 401 (no or unknown token), 403 (a weaker role), counted in linesight_api_refused_total." },
        "paths": {
            "/api/v1/stats": { "get": {
                "summary": "Totals, yield, NG rate and defect Pareto, overall and per bucket",
                "description": "from defaults to 24 h before to, to to now; window is [from, to). Buckets are in local time ([api] utc_offset_minutes, else the machine's offset at `to`); shift = 8-hour buckets starting 06:00, 14:00 and 22:00. Pareto counts defects that counted towards a verdict. Answers are cached for [api] stats_cache_ms (default 1000; 0 = off): an answer can lag the store by up to that long (inspections committed meanwhile may be missing), identical queries arriving together share one, and one served after 3/4 of that time is refreshed in the background. The cache key is the query as parsed: explicit from/to to the millisecond (never moved), or 'now' when to is omitted, in which case to_unix_ms tells the moment the answer was computed (at most stats_cache_ms before it is sent).",
                "parameters": [from, to, camera, param("bucket", "query", "string", "minute | hour (default) | day | shift")],
                "responses": ok("Stats") } },
            "/api/v1/inspections": { "get": {
                "summary": "Inspections, newest first, with keyset pagination",
                "parameters": [param("verdict", "query", "string", "ok | ng | failsafe"), camera,
                    param("class", "query", "string", "has a counted defect of this class"), from, to,
                    param("limit", "query", "integer", "1..=1000, default 100"),
                    param("cursor", "query", "string", "next_cursor of the previous page")],
                "responses": ok("InspectionPage") } },
            "/api/v1/inspections/{id}": { "get": {
                "summary": "One inspection, with the model and rules in force",
                "parameters": [param("id", "path", "integer", "inspection id")],
                "responses": ok("Inspection") } },
            "/api/v1/inspections/{id}/image": { "get": {
                "summary": "The inspection's archived frame as PNG (every NG and fail-safe frame, a sample of OK frames)",
                "description": "404 when the inspection has no archived image: an OK frame not sampled, deleted by archive retention, not written (the archive fell behind or failed), or no [archive] configured.",
                "parameters": [param("id", "path", "integer", "inspection id"),
                    param("overlay", "query", "boolean", "true: with the defects' bounding boxes outlined (default false)"),
                    param("heat", "query", "boolean", "true: the anomaly map instead, at most 64 cells a side, grey level 128 × score / threshold (128 = the threshold); anomaly models only")],
                "responses": {
                    "200": { "description": "The image", "content": { "image/png": { "schema": { "type": "string", "contentMediaType": "image/png" } } } },
                    "400": { "$ref": "#/components/responses/Error" },
                    "401": { "$ref": "#/components/responses/Error" },
                    "404": { "$ref": "#/components/responses/Error" },
                } } },
            "/api/v1/parts/{part_id}": { "get": {
                "summary": "Every inspection of one part, oldest first (traceability)",
                "parameters": [param("part_id", "path", "string", "part id")],
                "responses": ok("Part") } },
            "/api/v1/cameras": { "get": { "summary": "Live camera state", "responses": ok("Cameras") } },
            "/api/v1/openapi.json": { "get": { "summary": "This document", "responses": ok("OpenApi") } },
        },
        "components": {
            "responses": { "Error": { "description": "Bad query (400), no or unknown token (401), a token whose role may not (403), or unknown id (404)",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
                "Counts": counts,
                "ClassCount": { "type": "object", "required": ["class", "defects", "inspections"], "properties": {
                    "class": { "type": "string" }, "defects": { "type": "integer" }, "inspections": { "type": "integer" } } },
                "Stats": { "type": "object",
                    "required": ["from_unix_ms", "to_unix_ms", "bucket", "utc_offset_minutes", "totals", "classes", "buckets"],
                    "properties": {
                        "from_unix_ms": { "type": "integer" }, "to_unix_ms": { "type": "integer" },
                        "camera": { "type": ["string", "null"] }, "bucket": { "type": "string" },
                        "utc_offset_minutes": { "type": "integer" },
                        "totals": { "$ref": "#/components/schemas/Counts" },
                        "classes": { "type": "array", "items": { "$ref": "#/components/schemas/ClassCount" } },
                        "buckets": { "type": "array", "items": { "$ref": "#/components/schemas/Bucket" } } } },
                "Bucket": { "allOf": [ { "$ref": "#/components/schemas/Counts" } ], "type": "object",
                    "required": ["start_unix_ms", "start", "classes", "inspections", "ok", "ng", "failsafe", "yield"],
                    "properties": { "start_unix_ms": { "type": "integer" }, "start": { "type": "string" },
                        "classes": { "type": "array", "items": { "$ref": "#/components/schemas/ClassCount" } } } },
                "Defect": { "type": "object", "required": ["class", "x", "y", "w", "h", "area_px", "max_score", "counted"],
                    "properties": { "class": { "type": "string" }, "x": { "type": "number" }, "y": { "type": "number" },
                        "w": { "type": "number" }, "h": { "type": "number" }, "area_px": { "type": "number" },
                        "area_mm2": { "type": ["number", "null"] }, "max_score": { "type": ["number", "null"] },
                        "counted": { "type": "boolean" } } },
                "Inspection": { "type": "object",
                    "required": ["id", "station", "camera", "seq", "part_id", "captured_unix_ms", "captured_at",
                        "decided_unix_ms", "latency_ms", "verdict", "failsafe_cause", "recipe", "threshold", "model", "defects"],
                    "properties": {
                        "id": { "type": "integer" }, "station": { "type": "string" }, "camera": { "type": "string" },
                        "recipe": { "type": ["string", "null"], "description": "the recipe that judged it (null: stored before recipes)" },
                        "threshold": { "type": ["number", "null"], "description": "anomaly models: the image-score threshold it was judged against" },
                        "seq": { "type": "integer" }, "part_id": { "type": ["string", "null"] },
                        "captured_unix_ms": { "type": "integer" }, "captured_at": { "type": "string" },
                        "decided_unix_ms": { "type": "integer" }, "latency_ms": { "type": "number" },
                        "verdict": { "type": "string", "enum": ["OK", "NG", "FAILSAFE"] },
                        "failsafe_cause": { "type": ["string", "null"], "enum": ["inference_error", "timeout", "invalid_output", null] },
                        "model": { "type": "object", "required": ["name", "sha256"], "properties": {
                            "name": { "type": "string" }, "sha256": { "type": "string" },
                            "rules": { "description": "the decision rules in force (single inspection only)" } } },
                        "defects": { "type": "array", "items": { "$ref": "#/components/schemas/Defect" } } } },
                "InspectionPage": { "type": "object", "required": ["items", "next_cursor"], "properties": {
                    "items": { "type": "array", "items": { "$ref": "#/components/schemas/Inspection" } },
                    "next_cursor": { "type": ["string", "null"], "description": "null on the last page" } } },
                "Part": { "type": "object", "required": ["part_id", "inspections"], "properties": {
                    "part_id": { "type": "string" },
                    "inspections": { "type": "array", "items": { "$ref": "#/components/schemas/Inspection" } } } },
                "Camera": { "type": "object", "required": ["id", "state", "fps", "last_frame_unix_ms", "captured"],
                    "properties": { "id": { "type": "string" }, "state": { "type": "string", "enum": ["up", "down"] }, "down_reason": { "type": ["string", "null"], "description": "why the camera is down (null while up)" },
                        "fps": { "type": "number" }, "last_frame_unix_ms": { "type": ["integer", "null"] },
                        "captured": { "type": "integer" } } },
                "Cameras": { "type": "object", "required": ["cameras"], "properties": {
                    "cameras": { "type": "array", "items": { "$ref": "#/components/schemas/Camera" } } } },
                "OpenApi": { "type": "object", "required": ["openapi", "info", "paths"] },
            },
        },
    })
}
