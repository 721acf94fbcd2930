//! Writing to the console.

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use squall_engine::chat::AdapterError;

use super::{Writer, permanent};

pub async fn write(output: &Mutex<Writer>, text: &str) -> Result<(), AdapterError> {
    let mut out = output.lock().await;
    let result = async {
        out.write_all(text.as_bytes()).await?;
        out.flush().await
    }
    .await;
    result.map_err(|e| permanent(format!("cannot write to the console: {e}")))
}
