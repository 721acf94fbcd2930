//! An in-process squall server on loopback for API tests.

use std::sync::Arc;

use anyhow::Result;
use serde_json::Value;
use squall::config::{Config, Sensitive};
use squall_engine::Engine;
use squall_tests::{Backend, TestDb, pack_dirs};

pub struct TestServer {
    pub base: String,
    pub key: String,
    pub engine: Arc<Engine>,
    pub http: reqwest::Client,
    db: Option<TestDb>,
    _data: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Result<TestServer> {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<TestServer> {
        squall_engine::install_crypto_provider();
        let db = TestDb::new(backend).await?;
        let data = tempfile::tempdir()?;
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: data.path().to_path_buf(),
            database_url: Some(Sensitive(db.url.clone())),
            packs: pack_dirs(),
            ..Config::default()
        };
        tweak(&mut config);
        let server = squall::server::start(&config).await?;
        // Written on the first start of a database only (a restart on the
        // same database keeps the key it had).
        let key = std::fs::read_to_string(data.path().join("admin-api-key"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok(TestServer {
            base: format!("http://{}", server.addr),
            key,
            engine: server.engine,
            http: reqwest::Client::new(),
            db: Some(db),
            _data: data,
        })
    }

    /// The server's data directory (its datastore key file is there).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    /// The database the server runs on (for the CLI's own, local, views).
    pub fn database_url(&self) -> &str {
        self.db.as_ref().map_or("", |db| db.url.as_str())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST JSON text with the API key.
    pub async fn post(&self, path: &str, body: &str) -> Result<(u16, Value)> {
        let response = self
            .http
            .post(self.url(path))
            .header("St2-Api-Key", &self.key)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let response = self
            .http
            .get(self.url(path))
            .header("St2-Api-Key", &self.key)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Create an execution through the API; its id.
    pub async fn create_execution(&self, action: &str, parameters: Value) -> Result<String> {
        let (status, created) = self
            .post(
                "/api/v1/executions",
                &serde_json::json!({"action": action, "parameters": parameters}).to_string(),
            )
            .await?;
        anyhow::ensure!(status == 201, "create answered {status}: {created}");
        Ok(created["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no id in {created}"))?
            .to_owned())
    }

    /// Run an action through the API and wait (up to `wait`) for it to finish; its view.
    pub async fn run_action(
        &self,
        action: &str,
        parameters: Value,
        wait: std::time::Duration,
    ) -> Result<Value> {
        let id = self.create_execution(action, parameters).await?;
        self.engine.wait_for(&id, wait).await?;
        let (status, view) = self.get(&format!("/api/v1/executions/{id}")).await?;
        anyhow::ensure!(status == 200, "{view}");
        Ok(view)
    }

    /// The executions a trigger instance caused, once they are all finished.
    pub async fn finished_executions_of(&self, trigger_instance: &str) -> Result<Vec<Value>> {
        let engine = self.engine.clone();
        let ti = trigger_instance.to_owned();
        let ids = engine.store.executions_for_trigger(&ti).await?;
        let mut out = Vec::new();
        for id in ids {
            engine
                .wait_for(&id, std::time::Duration::from_secs(30))
                .await?;
            let (_, view) = self.get(&format!("/api/v1/executions/{id}")).await?;
            out.push(view);
        }
        Ok(out)
    }

    pub async fn stop(mut self) -> Result<()> {
        self.engine.shutdown();
        if let Some(db) = self.db.take() {
            db.cleanup().await?;
        }
        Ok(())
    }
}
