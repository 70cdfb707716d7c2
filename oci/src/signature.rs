//! Cosign-compatible signatures, verified offline with a public key.
//!
//! The format is cosign's "simple signing" (the one `cosign sign --key` writes and
//! `cosign verify --key … --insecure-ignore-tlog` checks): a small JSON payload naming the
//! repository and the **manifest digest**, signed with ECDSA P-256 over SHA-256 (DER signature),
//! stored in the same repository as the manifest tagged `sha256-<hex>.sig`, whose layers are
//! payloads carrying their signature in the `dev.cosignproject.cosign/signature` annotation.
//! No transparency log and no certificate: the operator's configured key is the whole trust root.
//!
//! A pulled plugin keeps what proves its origin in a [`Bundle`] beside it (`NAME.wasm.sig`): the
//! manifest, the payload and the signature. The host checks the chain again every time it loads
//! the file — key → payload → manifest digest → the manifest's one wasm layer → the file's
//! SHA-256 — so a file that arrives in the folder by any other way than a verified pull is refused
//! for a plugin that must be signed.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that holds the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type of the one layer of a wasm OCI artifact (the layout `wkg` and Wassette use).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The `type` every simple-signing payload carries.
const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The DER prefix of an ECDSA P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// A payload is a few hundred bytes; anything near this is not one.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// A wasm artifact's manifest is well under a kilobyte.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// A bundle holds a manifest and a payload (base64) and a signature.
const MAX_BUNDLE_BYTES: u64 = 4 * MAX_MANIFEST_BYTES as u64;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// An ECDSA P-256 public key (`-----BEGIN PUBLIC KEY-----`, as `cosign generate-key-pair` and
/// `cordon key new` write it).
#[derive(Clone)]
pub struct PublicKey {
    /// The uncompressed point (65 bytes).
    point: Vec<u8>,
}

impl PublicKey {
    /// Parses a PEM public key.
    pub fn from_pem(text: &[u8]) -> Result<Self> {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(text)
            .map_err(|e| anyhow::anyhow!("not a PEM public key (-----BEGIN PUBLIC KEY-----): {e}"))?;
        let der = spki.as_ref();
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(Self { point: point.to_vec() }),
            _ => bail!("only ECDSA P-256 public keys are supported (cosign's default)"),
        }
    }

    /// Reads a PEM public key file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("cannot read the public key {}", path.display()))?;
        Self::from_pem(&text).with_context(|| format!("the public key {}", path.display()))
    }

    /// The key as PEM.
    pub fn to_pem(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        pem("PUBLIC KEY", &der)
    }

    /// Checks a DER ECDSA signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, signature)
            .map_err(|_| anyhow::anyhow!("the signature does not verify with this key"))
    }
}

/// An ECDSA P-256 private key in unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
/// Cosign's own encrypted key files are not read; `cosign import-key-pair` takes this format.
pub struct SigningKey {
    pair: EcdsaKeyPair,
}

impl SigningKey {
    /// A new random key, as PKCS#8 PEM.
    pub fn generate_pem() -> Result<String> {
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("cannot generate a key: the system random source failed"))?;
        Ok(pem("PRIVATE KEY", document.as_ref()))
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(text: &[u8]) -> Result<Self> {
        if std::str::from_utf8(text).is_ok_and(|t| t.contains("ENCRYPTED")) {
            bail!("an encrypted key: give an unencrypted PKCS#8 P-256 key (`cordon key new` makes one)");
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(text)
            .map_err(|e| anyhow::anyhow!("not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----): {e}"))?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der(), &SystemRandom::new())
                .map_err(|e| anyhow::anyhow!("not an ECDSA P-256 private key: {e}"))?;
        Ok(Self { pair })
    }

    /// Reads a PKCS#8 PEM private key file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("cannot read the private key {}", path.display()))?;
        Self::from_pem(&text).with_context(|| format!("the private key {}", path.display()))
    }

    /// Its public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey { point: self.pair.public_key().as_ref().to_vec() }
    }

    /// A DER ECDSA signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| anyhow::anyhow!("signing failed: the system random source failed"))?;
        Ok(signature.as_ref().to_vec())
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = b64().encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[derive(Serialize, Deserialize)]
struct Payload {
    critical: Critical,
    optional: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Serialize, Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The simple-signing payload that says "`repository` at `manifest_digest`" (e.g.
/// `registry.example.com/tools/weather`, `sha256:…`).
pub fn payload(repository: &str, manifest_digest: &str) -> Vec<u8> {
    let payload = Payload {
        critical: Critical {
            identity: Identity { docker_reference: repository.to_string() },
            image: Image { docker_manifest_digest: manifest_digest.to_string() },
            kind: PAYLOAD_TYPE.to_string(),
        },
        optional: None,
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// What a verified payload vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The repository it names (`registry/path`, no tag).
    pub repository: String,
    /// The manifest digest it names (`sha256:…`).
    pub manifest_digest: String,
}

/// Checks `signature` (base64, as in the annotation) over `payload` with `key`, then reads what
/// the payload vouches for. The payload is parsed only after its signature verified.
pub fn verify(key: &PublicKey, payload: &[u8], signature_b64: &str) -> Result<Signed> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        bail!("the signature payload is {} bytes, more than {MAX_PAYLOAD_BYTES}", payload.len());
    }
    let signature = b64().decode(signature_b64.trim()).context("the signature is not base64")?;
    key.verify(payload, &signature)?;
    let parsed: Payload = serde_json::from_slice(payload).context("the signed payload is not simple-signing JSON")?;
    if parsed.critical.kind != PAYLOAD_TYPE {
        bail!("the signed payload's type is {:?}, not {PAYLOAD_TYPE:?}", parsed.critical.kind);
    }
    Ok(Signed {
        repository: parsed.critical.identity.docker_reference,
        manifest_digest: parsed.critical.image.docker_manifest_digest,
    })
}

/// The SHA-256 of `bytes` in lower-case hex (the form of `[plugins.X] sha256` pins).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `sha256:<hex>` of `bytes` (an OCI digest).
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

#[derive(Deserialize)]
struct ManifestLayers {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// An OCI descriptor: what a manifest says about one blob.
#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    /// The blob's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Its size in bytes, as the manifest declares it.
    pub size: u64,
}

/// The one `application/wasm` layer of a wasm artifact manifest.
pub fn wasm_layer(manifest: &[u8]) -> Result<Descriptor> {
    if manifest.len() > MAX_MANIFEST_BYTES {
        bail!("the manifest is {} bytes, more than {MAX_MANIFEST_BYTES}", manifest.len());
    }
    let parsed: ManifestLayers = serde_json::from_slice(manifest).context("the manifest is not OCI manifest JSON")?;
    let mut wasm = parsed.layers.into_iter().filter(|l| l.media_type == WASM_LAYER_MEDIA_TYPE);
    match (wasm.next(), wasm.next()) {
        (Some(layer), None) => Ok(layer),
        (None, _) => bail!("the artifact has no {WASM_LAYER_MEDIA_TYPE} layer: not a wasm component artifact"),
        (Some(_), Some(_)) => bail!("the artifact has more than one {WASM_LAYER_MEDIA_TYPE} layer"),
    }
}

/// What proves a pulled plugin's origin, kept beside it as `NAME.wasm.sig` (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// Where it was pulled from, `oci://registry/path@sha256:…`.
    pub source: String,
    /// The artifact's manifest, base64.
    pub manifest: String,
    /// The signed simple-signing payload, base64.
    pub payload: String,
    /// The payload's signature, base64 (as in the annotation).
    pub signature: String,
}

impl Bundle {
    /// The bundle file of the plugin file `wasm` (`demo.wasm` → `demo.wasm.sig`).
    pub fn path_for(wasm: &Path) -> PathBuf {
        let mut name = wasm.as_os_str().to_owned();
        name.push(".sig");
        PathBuf::from(name)
    }

    /// Reads the bundle beside `wasm`.
    pub fn read_for(wasm: &Path) -> Result<Self> {
        let path = Self::path_for(wasm);
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let opened = match std::fs::File::open(&path) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("no signature: {file} is missing (install the plugin with `cordon pull`, which verifies and writes it)")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {file}")),
        };
        // Read no more than a bundle can be, whatever sits under that name.
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(opened, MAX_BUNDLE_BYTES + 1), &mut text)
            .with_context(|| format!("cannot read {file}"))?;
        if text.len() as u64 > MAX_BUNDLE_BYTES {
            bail!("{file} is larger than {MAX_BUNDLE_BYTES} bytes: not a signature bundle");
        }
        serde_json::from_slice(&text).with_context(|| format!("{file} is not a signature bundle"))
    }

    /// Checks the whole chain for a file whose SHA-256 is `file_digest` (hex): the signature over
    /// the payload with `key`, the payload naming this manifest, the manifest's one wasm layer
    /// being this file, and — when the plugin's `source` is configured — the payload naming the
    /// source's repository and, if the source names a digest, that manifest.
    pub fn verify(&self, key: &PublicKey, file_digest: &str, source: Option<&str>) -> Result<Signed> {
        let payload = b64().decode(&self.payload).context("the bundle's payload is not base64")?;
        let signed = verify(key, &payload, &self.signature)?;
        let manifest = b64().decode(&self.manifest).context("the bundle's manifest is not base64")?;
        let manifest_digest = digest_of(&manifest);
        if signed.manifest_digest != manifest_digest {
            bail!("the signature is for manifest {}, not {manifest_digest}", signed.manifest_digest);
        }
        let layer = wasm_layer(&manifest)?;
        let file = format!("sha256:{}", file_digest.to_ascii_lowercase());
        if layer.digest != file {
            bail!("the file is {file}, but the signed artifact's wasm layer is {}", layer.digest);
        }
        if let Some(source) = source {
            let (repository, digest) = split_source(source)?;
            if signed.repository != repository {
                bail!("the signature is for {}, but the plugin's source is {repository}", signed.repository);
            }
            if let Some(digest) = digest {
                if signed.manifest_digest != digest {
                    bail!("the signature is for {}, but the plugin's source pins {digest}", signed.manifest_digest);
                }
            }
        }
        Ok(signed)
    }
}

/// `oci://REGISTRY/REPOSITORY[:TAG][@sha256:…]` → (`REGISTRY/REPOSITORY`, the digest if named).
pub fn split_source(source: &str) -> Result<(&str, Option<&str>)> {
    let rest =
        source.strip_prefix("oci://").with_context(|| format!("source {source:?} is not an oci:// reference"))?;
    let (name, digest) = match rest.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (rest, None),
    };
    // A tag is a `:` after the last `/` (a `:` before it is the registry's port).
    let last_slash = name.rfind('/').with_context(|| format!("source {source:?} names no repository"))?;
    let repository = match name[last_slash..].find(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    };
    Ok((repository, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap()
    }

    fn manifest_for(wasm: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": digest_of(b"{}"), "size": 2},
            "layers": [{"mediaType": WASM_LAYER_MEDIA_TYPE, "digest": digest_of(wasm), "size": wasm.len()}],
        }))
        .unwrap()
    }

    fn bundle(signer: &SigningKey, repository: &str, manifest: &[u8]) -> Bundle {
        let payload = payload(repository, &digest_of(manifest));
        Bundle {
            source: format!("oci://{repository}@{}", digest_of(manifest)),
            manifest: b64().encode(manifest),
            payload: b64().encode(&payload),
            signature: b64().encode(signer.sign(&payload).unwrap()),
        }
    }

    #[test]
    fn keys_round_trip_through_pem() {
        let signer = key();
        let public = PublicKey::from_pem(signer.public_key().to_pem().as_bytes()).unwrap();
        let signature = signer.sign(b"message").unwrap();
        public.verify(b"message", &signature).unwrap();
        assert!(public.verify(b"other message", &signature).is_err());
        assert!(PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        assert!(SigningKey::from_pem(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n").is_err());
    }

    #[test]
    fn a_bundle_verifies_only_for_its_file_its_key_and_its_repository() {
        let wasm = b"\0asm component bytes";
        let signer = key();
        let manifest = manifest_for(wasm);
        let good = bundle(&signer, "127.0.0.1:5000/tools/demo", &manifest);
        let file_digest = hex::encode(Sha256::digest(wasm));
        let signed =
            good.verify(&signer.public_key(), &file_digest, Some("oci://127.0.0.1:5000/tools/demo:1.0")).unwrap();
        let pinned = format!("oci://127.0.0.1:5000/tools/demo@{}", digest_of(&manifest));
        good.verify(&signer.public_key(), &file_digest, Some(&pinned)).unwrap();
        let other_pin = format!("oci://127.0.0.1:5000/tools/demo@{}", digest_of(b"another manifest"));
        let e = good.verify(&signer.public_key(), &file_digest, Some(&other_pin)).unwrap_err();
        assert!(format!("{e:#}").contains("pins"), "{e:#}");
        assert_eq!(signed.manifest_digest, digest_of(&manifest));

        // Another file under the same bundle.
        let other = hex::encode(Sha256::digest(b"another file"));
        let e = good.verify(&signer.public_key(), &other, None).unwrap_err();
        assert!(format!("{e:#}").contains("wasm layer"), "{e:#}");
        // Another key.
        let e = good.verify(&key().public_key(), &file_digest, None).unwrap_err();
        assert!(format!("{e:#}").contains("does not verify"), "{e:#}");
        // Another repository than the configured source.
        let e = good.verify(&signer.public_key(), &file_digest, Some("oci://evil.example/tools/demo:1.0")).unwrap_err();
        assert!(format!("{e:#}").contains("source"), "{e:#}");
        // A manifest swapped under a valid signature of another one.
        let mut swapped = good.clone();
        swapped.manifest = b64().encode(manifest_for(b"another file"));
        let e = swapped.verify(&signer.public_key(), &other, None).unwrap_err();
        assert!(format!("{e:#}").contains("signature is for manifest"), "{e:#}");
        // A payload edited after signing.
        let mut edited = good.clone();
        edited.payload = b64().encode(payload("127.0.0.1:5000/tools/demo", &digest_of(b"x")));
        assert!(edited.verify(&signer.public_key(), &file_digest, None).is_err());
    }

    /// A signature `cosign sign --key` made (the key-based test vector sigstore-rs verifies in
    /// its own suite): our payload for the same repository and digest is byte for byte the one
    /// cosign signed, and our verification accepts cosign's signature of it.
    #[test]
    fn a_signature_cosign_made_verifies_over_the_payload_we_build() {
        let cosign_public_key = "-----BEGIN PUBLIC KEY-----\n\
            MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cu\n\
            OSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==\n\
            -----END PUBLIC KEY-----\n";
        let cosign_signature =
            "MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8=";
        let digest = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";
        let key = PublicKey::from_pem(cosign_public_key.as_bytes()).unwrap();
        let ours = payload("registry-testing.svc.lan/busybox", digest);
        let signed = verify(&key, &ours, cosign_signature).unwrap();
        assert_eq!(
            signed,
            Signed { repository: "registry-testing.svc.lan/busybox".into(), manifest_digest: digest.into() }
        );
        // One byte of the payload changed: refused.
        let other = payload("registry-testing.svc.lan/busybox", &digest.replacen('f', "e", 1));
        assert!(verify(&key, &other, cosign_signature).is_err());
    }

    #[test]
    fn a_bundle_file_is_read_only_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("demo.wasm");
        let e = Bundle::read_for(&wasm).unwrap_err();
        assert!(e.to_string().contains("no signature"), "{e}");
        std::fs::write(Bundle::path_for(&wasm), vec![b' '; MAX_BUNDLE_BYTES as usize + 1]).unwrap();
        let e = Bundle::read_for(&wasm).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn sources_split_into_repository_and_digest() {
        assert_eq!(split_source("oci://127.0.0.1:5000/a/b:1.0").unwrap(), ("127.0.0.1:5000/a/b", None));
        assert_eq!(split_source("oci://ghcr.io/a/b").unwrap(), ("ghcr.io/a/b", None));
        assert_eq!(split_source("oci://ghcr.io/a/b@sha256:00").unwrap(), ("ghcr.io/a/b", Some("sha256:00")));
        assert_eq!(split_source("oci://ghcr.io/a/b:1@sha256:00").unwrap(), ("ghcr.io/a/b", Some("sha256:00")));
        assert!(split_source("ghcr.io/a/b").is_err());
        assert!(split_source("oci://b").is_err());
    }

    #[test]
    fn a_manifest_must_hold_exactly_one_wasm_layer() {
        assert!(wasm_layer(&manifest_for(b"x")).is_ok());
        let none = serde_json::to_vec(&serde_json::json!({"layers": []})).unwrap();
        assert!(wasm_layer(&none).is_err());
        let layer = serde_json::json!({"mediaType": WASM_LAYER_MEDIA_TYPE, "digest": digest_of(b"x"), "size": 1});
        let two = serde_json::to_vec(&serde_json::json!({"layers": [layer.clone(), layer]})).unwrap();
        assert!(wasm_layer(&two).is_err());
        assert!(wasm_layer(&vec![b' '; MAX_MANIFEST_BYTES + 1]).is_err());
    }
}
