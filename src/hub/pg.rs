//! The hub's PostgreSQL connections: made on first use and made again after one is lost.

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

pub struct Pg {
    config: tokio_postgres::Config,
    client: Mutex<Option<std::sync::Arc<Client>>>,
}

impl Pg {
    pub fn new(url: &str) -> Result<Self, tokio_postgres::Error> {
        Ok(Self { config: url.parse()?, client: Mutex::new(None) })
    }

    /// A new connection of its own (the ingest's: it runs transactions).
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "hub: PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// The shared connection for queries (the API's), connected again if it was lost.
    pub async fn shared(&self) -> Result<std::sync::Arc<Client>, tokio_postgres::Error> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(std::sync::Arc::clone(c));
        }
        let c = std::sync::Arc::new(self.connect().await?);
        *slot = Some(std::sync::Arc::clone(&c));
        Ok(c)
    }
}

/// The ingest's own connection, kept while it works.
pub struct IngestDb {
    pg: std::sync::Arc<Pg>,
    client: Option<Client>,
}

impl IngestDb {
    pub fn new(pg: std::sync::Arc<Pg>) -> Self {
        Self { pg, client: None }
    }

    /// The connection, made again if it was lost.
    pub async fn client(&mut self) -> Result<&mut Client, tokio_postgres::Error> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(self.pg.connect().await?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}
