//! Pushing, pulling and signing wasm artifacts on an OCI registry (the distribution API, through
//! `oci-client`).
//!
//! The artifact layout is the one `wkg` and Wassette use: an OCI image manifest whose config has
//! the media type `application/vnd.wasm.config.v0+json` and whose one layer is the component,
//! `application/wasm`. Signatures are cosign's (see [`crate::signature`]).
//!
//! Transport: HTTPS always, except to a loopback registry when the caller asks for plain HTTP
//! (`--plain-http`), the way a test registry or a local mirror runs.

use crate::signature::{self, Bundle, PublicKey, Signed, SigningKey, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

/// The config media type of a wasm artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The config media type of a cosign signature manifest (an empty image config).
const SIGNATURE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// An `oci://REGISTRY/REPOSITORY(:TAG|@sha256:DIGEST)` reference.
#[derive(Debug, Clone)]
pub struct Target {
    reference: Reference,
}

impl Target {
    /// Parses an `oci://` reference. The registry must be named (no implicit Docker Hub), and a
    /// reference with neither tag nor digest means `:latest`.
    pub fn parse(text: &str) -> Result<Self> {
        let rest = text
            .strip_prefix("oci://")
            .with_context(|| format!("{text:?} is not an oci:// reference (oci://REGISTRY/REPOSITORY:TAG)"))?;
        let registry = rest.split('/').next().unwrap_or_default();
        let names_a_host = registry.contains('.') || registry.contains(':') || registry == "localhost";
        if !rest.contains('/') || !names_a_host {
            bail!(
                "{text:?} names no registry: write oci://REGISTRY/REPOSITORY:TAG, e.g. oci://ghcr.io/acme/weather:1.0"
            );
        }
        let reference = Reference::try_from(rest).map_err(|e| anyhow!("{text:?} is not a valid reference: {e}"))?;
        Ok(Self { reference })
    }

    /// The registry, e.g. `ghcr.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// `registry/repository`, as a signature names it.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.reference.registry(), self.reference.repository())
    }

    /// The repository's last path segment (the default plugin name).
    pub fn last_segment(&self) -> &str {
        self.reference.repository().rsplit('/').next().unwrap_or_default()
    }

    /// The digest it names, if any.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &str) -> Target {
        Target {
            reference: Reference::with_digest(
                self.reference.registry().to_string(),
                self.reference.repository().to_string(),
                digest.to_string(),
            ),
        }
    }

    fn signature_tag(&self, manifest_digest: &str) -> Reference {
        let tag = format!("{}.sig", manifest_digest.replacen(':', "-", 1));
        Reference::with_tag(self.reference.registry().to_string(), self.reference.repository().to_string(), tag)
    }

    /// Whether the registry is on a loopback address.
    pub fn is_loopback(&self) -> bool {
        let registry = self.registry();
        let host = match registry.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None => registry.rsplit_once(':').map_or(registry, |(host, _)| host),
        };
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}", self.reference.whole())
    }
}

/// How to reach a registry.
#[derive(Clone)]
pub struct Access {
    /// Credentials (Docker config file, flags, or none).
    pub auth: RegistryAuth,
    /// Plain HTTP: refused unless the registry is on loopback.
    pub plain_http: bool,
}

impl Access {
    /// Credentials for `registry`: `username`/`password` when given, else the Docker config file
    /// ([`docker_config_auth`]), else anonymous.
    pub fn for_registry(
        registry: &str,
        username: Option<String>,
        password: Option<String>,
        plain_http: bool,
    ) -> Result<Self> {
        let auth = match (username, password) {
            (Some(user), Some(password)) => RegistryAuth::Basic(user, password),
            (Some(_), None) | (None, Some(_)) => {
                bail!("a registry username needs a password, and a password a username")
            }
            (None, None) => docker_config_auth(registry)?,
        };
        Ok(Self { auth, plain_http })
    }
}

/// The Docker config file's credentials for `registry` (`$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`, credential helpers included). No file, or no entry for the registry,
/// is anonymous, as docker does; a file that cannot be read or a helper that fails is an error,
/// since going on anonymously would hide why the registry then refuses.
fn docker_config_auth(registry: &str) -> Result<RegistryAuth> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".docker")));
    let Some(file) = dir.map(|dir| dir.join("config.json")).filter(|file| file.exists()) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let opened = std::fs::File::open(&file).with_context(|| format!("cannot read {}", file.display()))?;
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(opened), registry) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            Ok(RegistryAuth::Basic(user, password))
        }
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
        Err(docker_credential::CredentialRetrievalError::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
        Err(e) => bail!("{}: the credentials for {registry}: {e}", file.display()),
    }
}

/// A client for one target's registry.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

/// A verified pull: the component and what proves where it came from.
pub struct Pulled {
    /// The component's bytes (their SHA-256 is the manifest's wasm layer digest).
    pub bytes: Vec<u8>,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The signature bundle, when a key was given.
    pub bundle: Option<Bundle>,
}

impl Registry {
    /// A client for `target`'s registry.
    pub fn new(target: &Target, access: &Access) -> Result<Self> {
        // reqwest's rustls takes the process-wide provider: ring, as everywhere in Cordon.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if access.plain_http {
            if !target.is_loopback() {
                bail!("plain HTTP is allowed only to a loopback registry, not {}", target.registry());
            }
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("cordon/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).context("cannot set up the registry client")?;
        Ok(Self { client, auth: access.auth.clone() })
    }

    /// Publishes `component` at `target` as a wasm artifact; returns the manifest digest.
    pub async fn push(&self, target: &Target, component: Vec<u8>) -> Result<String> {
        let layer = ImageLayer::new(component, signature::WASM_LAYER_MEDIA_TYPE.to_string(), None);
        let config = Config::new(b"{}".to_vec(), WASM_CONFIG_MEDIA_TYPE.to_string(), None);
        let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
        manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_string());
        let digest = canonical_digest(&manifest)?;
        self.client
            .push(&target.reference, std::slice::from_ref(&layer), config, &self.auth, Some(manifest))
            .await
            .map_err(|e| registry_error(target, "push", e))?;
        Ok(digest)
    }

    /// The raw manifest at `target` and its digest (checked against the target's digest, if it
    /// names one).
    async fn manifest(&self, target: &Target) -> Result<(Vec<u8>, String)> {
        self.manifest_if_any(target).await?.with_context(|| format!("{target}: cannot fetch the manifest: not found"))
    }

    /// [`Registry::manifest`], or `None` when the registry says there is none. Any other failure
    /// (refused credentials, a network error) is an error, never taken for "none".
    async fn manifest_if_any(&self, target: &Target) -> Result<Option<(Vec<u8>, String)>> {
        let (bytes, digest) =
            match self.client.pull_manifest_raw(&target.reference, &self.auth, &[OCI_IMAGE_MEDIA_TYPE]).await {
                Ok(found) => found,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(registry_error(target, "fetch the manifest", e)),
            };
        if signature::digest_of(&bytes) != digest {
            bail!("{target}: the registry's manifest digest {digest} is not the digest of what it sent");
        }
        Ok(Some((bytes.to_vec(), digest)))
    }

    /// A blob of at most `limit` bytes, checked against its digest. The bound stops the download
    /// as soon as it is passed, whatever size the registry declared.
    async fn blob(&self, target: &Target, digest: &str, size: u64, limit: u64) -> Result<Vec<u8>> {
        if size > limit {
            bail!("{target}: the blob {digest} is {size} bytes, more than the limit of {limit}");
        }
        let descriptor =
            oci_client::manifest::OciDescriptor { digest: digest.to_string(), size: size as i64, ..Default::default() };
        let mut out = Bounded { bytes: Vec::with_capacity(size as usize), limit, exceeded: false };
        self.client.pull_blob(&target.reference, &descriptor, &mut out).await.map_err(|e| {
            if out.exceeded {
                anyhow!("{target}: the blob {digest} is larger than the limit of {limit} bytes")
            } else {
                registry_error(target, "fetch a blob", e)
            }
        })?;
        if out.bytes.len() as u64 != size {
            bail!("{target}: the blob {digest} is {} bytes, but the manifest says {size}", out.bytes.len());
        }
        if signature::digest_of(&out.bytes) != digest {
            bail!("{target}: the blob does not match its digest {digest}");
        }
        Ok(out.bytes)
    }

    /// Pulls the component at `target`, at most `max_bytes`. With `key`, a signature by that key
    /// over the manifest must be in the registry, or nothing is returned.
    pub async fn pull(&self, target: &Target, max_bytes: u64, key: Option<&PublicKey>) -> Result<Pulled> {
        let (manifest, manifest_digest) = self.manifest(target).await?;
        let layer = signature::wasm_layer(&manifest).with_context(|| format!("{target}"))?;
        // The signature first: an unsigned artifact is refused before its component is fetched.
        let bundle = match key {
            Some(key) => Some(self.signature(target, key, &manifest, &manifest_digest).await?),
            None => None,
        };
        let bytes = self.blob(target, &layer.digest, layer.size, max_bytes).await?;
        Ok(Pulled { bytes, manifest_digest, bundle })
    }

    /// Finds a signature of `manifest_digest` by `key` among the cosign signatures stored for it.
    async fn signature(
        &self,
        target: &Target,
        key: &PublicKey,
        manifest: &[u8],
        manifest_digest: &str,
    ) -> Result<Bundle> {
        let signatures = Target { reference: target.signature_tag(manifest_digest) };
        let Some((signature_manifest, _)) = self.manifest_if_any(&signatures).await? else {
            bail!("{target} has no signature for {manifest_digest} (looked for {signatures})");
        };
        let parsed: OciImageManifest = serde_json::from_slice(&signature_manifest)
            .with_context(|| format!("{signatures}: not a signature manifest"))?;
        let mut tried = Vec::new();
        for layer in signature_layers(&parsed)? {
            let Some(signature_b64) = layer.annotations.as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION)) else {
                continue;
            };
            let payload = self
                .blob(&signatures, &layer.digest, layer.size.max(0) as u64, signature::MAX_PAYLOAD_BYTES as u64)
                .await?;
            match signature::verify(key, &payload, signature_b64) {
                Ok(Signed { manifest_digest: signed, .. }) if signed == manifest_digest => {
                    let b64 = base64::engine::general_purpose::STANDARD;
                    return Ok(Bundle {
                        source: target.at_digest(manifest_digest).to_string(),
                        manifest: b64.encode(manifest),
                        payload: b64.encode(&payload),
                        signature: signature_b64.clone(),
                    });
                }
                Ok(Signed { manifest_digest: signed, .. }) => tried.push(format!("one signs {signed} instead")),
                Err(e) => tried.push(format!("{e:#}")),
            }
        }
        if tried.is_empty() {
            bail!("{target}: {signatures} holds no cosign signature");
        }
        bail!("{target}: no signature of {manifest_digest} by this key ({})", tried.join("; "))
    }

    /// Signs the manifest at `target` with `key` and stores the signature the way cosign does
    /// (added to the signatures already there); returns the signed manifest digest.
    pub async fn sign(&self, target: &Target, key: &SigningKey) -> Result<String> {
        let (manifest, manifest_digest) = self.manifest(target).await?;
        signature::wasm_layer(&manifest).with_context(|| format!("{target}"))?;
        let payload = signature::payload(&target.repository(), &manifest_digest);
        let signature_b64 = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload)?);
        let signatures = target.signature_tag(&manifest_digest);
        let signatures_target = Target { reference: signatures.clone() };

        let mut layers: Vec<ImageLayer> = Vec::new();
        // Only a registry that says "none" means there are none: taking a failed fetch for that
        // would replace the other signers' signatures with this one alone.
        if let Some((existing, _)) = self.manifest_if_any(&signatures_target).await? {
            let parsed: OciImageManifest =
                serde_json::from_slice(&existing).context("the existing signature manifest")?;
            for layer in signature_layers(&parsed)? {
                let data = self
                    .blob(
                        &signatures_target,
                        &layer.digest,
                        layer.size.max(0) as u64,
                        signature::MAX_PAYLOAD_BYTES as u64,
                    )
                    .await?;
                layers.push(ImageLayer::new(data, layer.media_type.clone(), layer.annotations.clone()));
            }
        }
        let annotations = BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), signature_b64)]);
        layers.push(ImageLayer::new(payload, SIMPLE_SIGNING_MEDIA_TYPE.to_string(), Some(annotations)));
        let config = empty_image_config(&layers);
        let mut signature_manifest = OciImageManifest::build(&layers, &config, None);
        signature_manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_string());
        self.client
            .push(&signatures, &layers, config, &self.auth, Some(signature_manifest))
            .await
            .map_err(|e| registry_error(target, "push the signature", e))?;
        Ok(manifest_digest)
    }
}

/// Signatures kept for one manifest, at most: a signature manifest listing thousands of layers
/// would otherwise make a pull fetch (and check) each of them.
const MAX_SIGNATURES: usize = 64;

/// The simple-signing layers of a signature manifest, refused past [`MAX_SIGNATURES`].
fn signature_layers(manifest: &OciImageManifest) -> Result<Vec<&oci_client::manifest::OciDescriptor>> {
    let layers: Vec<_> = manifest.layers.iter().filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE).collect();
    if layers.len() > MAX_SIGNATURES {
        bail!("the signature manifest lists {} signatures, more than {MAX_SIGNATURES}", layers.len());
    }
    Ok(layers)
}

/// Whether the registry turned the request down for want of (valid) credentials, in any of the
/// shapes `oci-client` reports it: its own auth errors, a 401/403, an `UNAUTHORIZED`/`DENIED`.
fn is_refused_login(error: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode;
    match error {
        OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => true,
        OciDistributionError::ServerError { code, .. } => matches!(code, 401 | 403),
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
        }
        _ => false,
    }
}

/// Whether the registry answered that the manifest or repository does not exist (404).
fn is_not_found(error: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode;
    match error {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown))
        }
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

/// The digest of `manifest` as `oci-client` uploads it (canonical JSON, as the image spec
/// recommends).
fn canonical_digest(manifest: &OciImageManifest) -> Result<String> {
    use serde::Serialize as _;
    let manifest = oci_client::manifest::OciManifest::Image(manifest.clone());
    let mut body = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut body, olpc_cjson::CanonicalFormatter::new());
    manifest.serialize(&mut serializer).context("cannot encode the manifest")?;
    Ok(signature::digest_of(&body))
}

/// The image config cosign gives a signature manifest: empty, its rootfs listing the payloads.
fn empty_image_config(layers: &[ImageLayer]) -> Config {
    let diff_ids: Vec<String> = layers.iter().map(|l| signature::digest_of(&l.data)).collect();
    let config = serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    Config::new(serde_json::to_vec(&config).unwrap_or_default(), SIGNATURE_CONFIG_MEDIA_TYPE.to_string(), None)
}

/// A registry failure with what was being done, without the credentials.
fn registry_error(target: &Target, doing: &str, error: OciDistributionError) -> anyhow::Error {
    let detail = if is_refused_login(&error) {
        "the registry refused the credentials (docker login, or --username with --password-stdin)".to_string()
    } else {
        error.to_string()
    };
    anyhow!("{target}: cannot {doing}: {detail}")
}

/// An in-memory sink that refuses to grow past `limit`.
struct Bounded {
    bytes: Vec<u8>,
    limit: u64,
    exceeded: bool,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.bytes.len() as u64 + buf.len() as u64 > self.limit {
            self.exceeded = true;
            return Poll::Ready(Err(std::io::Error::other("the blob is larger than its limit")));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_registry() {
        let t = Target::parse("oci://127.0.0.1:5000/tools/weather:1.0").unwrap();
        assert_eq!(t.registry(), "127.0.0.1:5000");
        assert_eq!(t.repository(), "127.0.0.1:5000/tools/weather");
        assert_eq!(t.last_segment(), "weather");
        assert!(t.is_loopback());
        let pinned = format!("oci://ghcr.io/acme/weather@sha256:{}", "a".repeat(64));
        let t = Target::parse(&pinned).unwrap();
        assert_eq!(t.digest(), Some(format!("sha256:{}", "a".repeat(64)).as_str()));
        assert!(!t.is_loopback());
        assert!(Target::parse("oci://localhost/x:1").unwrap().is_loopback());
        // No registry named: refused rather than sent to Docker Hub.
        assert!(Target::parse("oci://weather:1.0").is_err());
        assert!(Target::parse("oci://acme/weather:1.0").is_err());
        assert!(Target::parse("ghcr.io/acme/weather:1.0").is_err());
        assert!(Target::parse("oci://ghcr.io/Acme/weather:1.0").is_err());
    }

    #[test]
    fn a_signature_manifest_with_too_many_signatures_is_refused() {
        let layer = oci_client::manifest::OciDescriptor {
            media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
            ..Default::default()
        };
        let mut manifest = OciImageManifest { layers: vec![layer; MAX_SIGNATURES], ..Default::default() };
        assert_eq!(signature_layers(&manifest).unwrap().len(), MAX_SIGNATURES);
        manifest.layers.push(manifest.layers[0].clone());
        let e = signature_layers(&manifest).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }

    #[test]
    fn plain_http_goes_only_to_loopback() {
        let access = Access { auth: RegistryAuth::Anonymous, plain_http: true };
        assert!(Registry::new(&Target::parse("oci://127.0.0.1:5000/x/y:1").unwrap(), &access).is_ok());
        let e = Registry::new(&Target::parse("oci://registry.example.com/x/y:1").unwrap(), &access).err().unwrap();
        assert!(e.to_string().contains("loopback"), "{e}");
    }
}
