//! The NATS connection, for stations and hubs alike: retried until it is made, reconnecting for
//! ever, and the JetStream stream made (or checked) on the way.

use super::wire;
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// How to reach the NATS servers.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
    pub nkey_seed: Option<String>,
}

/// Connect to `servers` as `name`. Returns at once with a client that connects in the
/// background (and reconnects for ever), so a station starts while its hub is away.
pub async fn connect(
    servers: &[String],
    name: &str,
    creds: &Credentials,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5));
    if let (Some(u), Some(p)) = (&creds.user, &creds.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(seed) = &creds.nkey_seed {
        opts = opts.nkey(seed.clone());
    }
    if servers.iter().any(|s| s.starts_with("tls://")) {
        opts = opts.require_tls(true);
    }
    opts.connect(servers).await
}

/// How long the stream keeps records (the hub should have them long before).
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// How long the stream remembers message ids to drop a republished record (the hub's upsert by
/// message id catches the rest).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The stream of every station's records and status, made if missing with `replicas` copies
/// (1, or 3 on a 3-node cluster). The hub makes it; stations only publish to it.
pub async fn stream(js: &jetstream::Context, replicas: usize) -> Result<stream::Stream, async_nats::Error> {
    let config = stream::Config {
        name: wire::STREAM.into(),
        subjects: wire::STREAM_SUBJECTS.iter().map(|s| s.to_string()).collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: STREAM_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    };
    Ok(js.get_or_create_stream(config).await?)
}
