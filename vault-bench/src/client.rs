//! The tenant's side of the API: uploads, downloads, ranged reads, search and
//! metadata with one API key.

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Deserialize;
use vault_index::fields::Fields;

use crate::corpus::Doc;

/// A client of one tenant.
#[derive(Clone)]
pub struct Vault {
    http: reqwest::Client,
    url: String,
    key: String,
}

/// What the server said about a stored document.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Document id.
    pub id: String,
    /// Plaintext size.
    pub size: u64,
    /// SHA-256 of the plaintext, as computed by the server.
    pub sha256: [u8; 32],
}

#[derive(Deserialize)]
struct UploadAnswer {
    id: String,
    size: u64,
    sha256: String,
}

#[derive(Deserialize)]
struct SearchAnswer {
    total: u64,
    hits: Vec<SearchHit>,
}

#[derive(Deserialize)]
struct SearchHit {
    id: String,
}

#[derive(Deserialize)]
struct MetadataAnswer {
    fields: Fields,
}

/// Largest page of search hits the server gives.
pub const SEARCH_LIMIT: usize = 1000;

async fn check(
    r: reqwest::Response,
    what: &str,
    expected: u16,
) -> anyhow::Result<reqwest::Response> {
    if r.status().as_u16() == expected {
        return Ok(r);
    }
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    bail!(
        "{what}: {status}: {}",
        text.chars().take(300).collect::<String>()
    )
}

impl Vault {
    /// A client at `url` with API key `key`.
    pub fn new(http: reqwest::Client, url: &str, key: &str) -> Vault {
        Vault {
            http,
            url: url.to_owned(),
            key: key.to_owned(),
        }
    }

    async fn upload_body(
        &self,
        doc: &Doc,
        body: reqwest::Body,
        opaque: bool,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(format!("{}/v1/documents", self.url))
            .bearer_auth(&self.key)
            .header("X-Vault-Kind", doc.kind)
            .header("Content-Type", doc.content_type)
            .body(body);
        if let Some(fields) = &doc.header_fields {
            request = request.header("X-Vault-Fields", fields);
        }
        if opaque {
            request = request.header("X-Vault-Extraction", "opaque");
        }
        Ok(request.send().await?)
    }

    async fn stored(r: reqwest::Response) -> anyhow::Result<Stored> {
        let a: UploadAnswer = check(r, "upload", 201).await?.json().await?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&a.sha256, &mut sha256).context("sha256 of the upload answer")?;
        Ok(Stored {
            id: a.id,
            size: a.size,
            sha256,
        })
    }

    /// Uploads a document. Shared files that cannot be read for fields (422) are
    /// stored as opaque, as a client would.
    pub async fn upload(&self, doc: &Doc) -> anyhow::Result<Stored> {
        let r = self
            .upload_body(doc, doc.body.clone().into(), false)
            .await?;
        let r = if r.status().as_u16() == 422 && doc.format.starts_with("shared") {
            self.upload_body(doc, doc.body.clone().into(), true).await?
        } else {
            r
        };
        let stored = Self::stored(r).await?;
        if stored.size != doc.body.len() as u64 {
            bail!("upload stored {} bytes of {}", stored.size, doc.body.len());
        }
        Ok(stored)
    }

    /// Uploads a streamed body (no length known in advance) as `doc` declares.
    pub async fn upload_stream(&self, doc: &Doc, body: reqwest::Body) -> anyhow::Result<Stored> {
        Self::stored(self.upload_body(doc, body, false).await?).await
    }

    /// Downloads a whole document.
    pub async fn download(&self, id: &str) -> anyhow::Result<Bytes> {
        let r = self
            .http
            .get(format!("{}/v1/documents/{id}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await?;
        Ok(check(r, "download", 200).await?.bytes().await?)
    }

    /// Reads `len` bytes at `offset` (`Range: bytes=a-b`).
    pub async fn range(&self, id: &str, offset: u64, len: usize) -> anyhow::Result<Bytes> {
        let last = offset + len as u64 - 1;
        let r = self
            .http
            .get(format!("{}/v1/documents/{id}", self.url))
            .bearer_auth(&self.key)
            .header("Range", format!("bytes={offset}-{last}"))
            .send()
            .await?;
        Ok(check(r, "ranged read", 206).await?.bytes().await?)
    }

    /// A search: the total and the ids of the first page (up to [`SEARCH_LIMIT`]).
    pub async fn search(&self, q: &str) -> anyhow::Result<(u64, Vec<String>)> {
        let r = self
            .http
            .get(format!("{}/v1/search", self.url))
            .bearer_auth(&self.key)
            .query(&[("q", q), ("limit", &SEARCH_LIMIT.to_string())])
            .send()
            .await?;
        let a: SearchAnswer = check(r, "search", 200).await?.json().await?;
        Ok((a.total, a.hits.into_iter().map(|h| h.id).collect()))
    }

    /// One page of the document listing (`query`: e.g. `limit=100&kind=scan`):
    /// how many documents it held.
    pub async fn list(&self, query: &str) -> anyhow::Result<usize> {
        let r = self
            .http
            .get(format!("{}/v1/documents?{query}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let page: serde_json::Value = check(r, "list", 200).await?.json().await?;
        Ok(page["documents"].as_array().map_or(0, Vec::len))
    }

    /// Deletes a document (crypto-shred; its objects are removed).
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .delete(format!("{}/v1/documents/{id}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await?;
        check(r, "delete", 204).await.map(drop)
    }

    /// The fields the server holds for a document.
    pub async fn fields(&self, id: &str) -> anyhow::Result<Fields> {
        let r = self
            .http
            .get(format!("{}/v1/documents/{id}/metadata", self.url))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let a: MetadataAnswer = check(r, "metadata", 200).await?.json().await?;
        Ok(a.fields)
    }
}
