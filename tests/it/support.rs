//! What the integration tests share: hubs started in-process on `127.0.0.1:0` over a temporary
//! data folder, a ready-made world (team, API key, portals), real uploads through the typed
//! client, downloads, and deterministic bytes.
//!
//! Helpers return `Result<_, CloudError>` where a test may want to see a failure; set-up that
//! cannot fail in a healthy test panics with a message saying what broke.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::future::try_join_all;
use masv_agent::cloud::dto::{
    AddFile, AddedFile, Blueprint, ChunkExtra, CreateLink, CreatePortalPackage, CreateTeamPackage,
    CreatedPackage, FileExtras, FileKind, FinalizeFile, Link, LinkUrl, PackageSpec, Secret,
};
use masv_agent::cloud::{Client, CloudError};
use masv_agent::hub::{Faults, Hub, HubConfig};
use md5::{Digest, Md5};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;
/// The smallest part but the last that storage accepts (spec §3).
pub const MIN_PART: usize = 5 * MIB;
/// Part URLs are asked for this many at a time, so files of a few parts already need batches.
pub const PART_BATCH: u64 = 4;

/// A hub's data folder, deleted when the last hub (or test) holding it lets go; with its object
/// store when the hub keeps its files on S3 (a hub started again on the same data finds them).
#[derive(Clone)]
pub struct DataDir(Arc<TempDir>, Arc<std::sync::OnceLock<S3Server>>, bool);

impl DataDir {
    pub fn new() -> DataDir {
        DataDir(
            Arc::new(tempfile::tempdir().expect("a temporary folder for the hub")),
            Arc::default(),
            false,
        )
    }

    /// A data folder whose hubs keep their files on their disk, also when
    /// `MASV_TEST_HUB_STORAGE=s3`: for tests that inject faults into the hub's own storage.
    pub fn on_disk() -> DataDir {
        DataDir {
            2: true,
            ..DataDir::new()
        }
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The object store of this hub's files, started the first time it is asked for.
    pub fn s3(&self) -> &S3Server {
        self.1.get_or_init(S3Server::start)
    }
}

/// Whether test hubs keep their files on a real S3 server (`MASV_TEST_HUB_STORAGE=s3`, as
/// `.ci/run` runs the download and upload suites a second time) rather than on their disk.
pub fn hubs_on_s3() -> bool {
    std::env::var("MASV_TEST_HUB_STORAGE").is_ok_and(|v| v == "s3")
}

/// A real S3 server on loopback that checks signatures: `s3s-fs` (installed by `.ci/run`), over a
/// folder of its own, with one bucket, stopped when dropped.
pub struct S3Server {
    pub endpoint: url::Url,
    pub root: TempDir,
    pub bucket: String,
    child: std::process::Child,
}

pub const S3_KEY: &str = "masvtestkey";
pub const S3_SECRET: &str = "masvtestsecret0123456789";

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().expect("a folder for the object store");
        let bucket = "masv".to_string();
        std::fs::create_dir(root.path().join(&bucket)).expect("the bucket's folder");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(root.path())
            // Its log (to stdout), when a test needs it: MASV_TEST_S3_LOG=1 RUST_LOG=debug.
            .stdout(if std::env::var_os("MASV_TEST_S3_LOG").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs runs (installed by .ci/run: cargo install --locked s3s-fs --version 0.14.1 --features binary)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "s3s-fs did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}").parse().expect("a URL"),
            root,
            bucket,
            child,
        }
    }

    /// How a hub reaches this store, its objects under `prefix`.
    pub fn config(&self, prefix: &str) -> masv_agent::hub::S3Config {
        masv_agent::hub::S3Config {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            prefix: prefix.into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key: Secret::new(S3_KEY),
            secret_key: Secret::new(S3_SECRET),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a test hub differs from a default one.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    pub faults: Faults,
    /// How long signed storage URLs live (default: the hub's hour). Zero makes every URL
    /// expired the moment it is issued.
    pub url_ttl: Option<Duration>,
    /// Store names like `../x` as given: the hub plays a hostile service.
    pub accept_hostile_names: bool,
    /// Serve on this address (a hub started again where a stopped one was), not a free port.
    pub addr: Option<SocketAddr>,
    /// The address clients reach the hub at (a proxy in front of it), in signed URLs and links.
    pub public_url: Option<url::Url>,
    /// Where the hub's share links point (default: its public URL).
    pub link_base: Option<url::Url>,
    /// Keep the files on the data folder's S3 server (also when `MASV_TEST_HUB_STORAGE=s3`).
    pub s3: bool,
}

impl HubOptions {
    pub fn faults(faults: Faults) -> HubOptions {
        HubOptions {
            faults,
            ..HubOptions::default()
        }
    }
}

/// A hub serving on a port of its own. Several may serve the same data folder at once (SQLite
/// WAL; they share the signing key stored there).
pub struct TestHub {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    pub addr: SocketAddr,
    /// Operator commands (teams, keys, portals, quarantine) on the served data folder, through
    /// a connection of its own.
    pub operator: Hub,
    pub data: DataDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestHub {
    /// A default hub over a fresh data folder.
    pub async fn start() -> TestHub {
        TestHub::start_with(DataDir::new(), HubOptions::default()).await
    }

    /// A hub over `data` (fresh or used before), with `options`.
    pub async fn start_with(data: DataDir, options: HubOptions) -> TestHub {
        let mut config = HubConfig::new(data.path());
        config.faults = options.faults;
        if let Some(ttl) = options.url_ttl {
            config.url_ttl = ttl;
        }
        config.accept_hostile_names = options.accept_hostile_names;
        config.public_url = options.public_url;
        config.link_base = options.link_base;
        if options.s3 || (hubs_on_s3() && !data.2) {
            // Faults are injected into the hub's own storage (the store's own refusals are
            // tested in `s3`).
            assert!(
                config.faults.is_off(),
                "storage faults need the hub's own storage: give this test DataDir::on_disk()"
            );
            config.s3 = Some(data.s3().config("hub/"));
        }
        // Opened first so that the signing key exists before the served hub reads it.
        let operator = Hub::open(config.clone()).expect("the hub opens its data folder");
        let served = Hub::open(config).expect("a second hub opens the same data folder");
        let listener = TcpListener::bind(options.addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .expect("a free port on 127.0.0.1 (or the one asked for)");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(served.serve(listener, async move {
            let _ = stop.await;
        }));
        TestHub {
            base_url: format!("http://{addr}/v1"),
            addr,
            operator,
            data,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// A hub over `data` whose storage refuses every request (500): storage down.
    pub async fn refusing(data: DataDir) -> TestHub {
        let faults = Faults {
            fail_ratio: 1.0,
            ..Faults::default()
        };
        TestHub::start_with(data, HubOptions::faults(faults)).await
    }

    /// A default hub over `data` serving on `addr`, where a stopped one was.
    pub async fn start_at(data: DataDir, addr: SocketAddr) -> TestHub {
        let options = HubOptions {
            addr: Some(addr),
            ..HubOptions::default()
        };
        TestHub::start_with(data, options).await
    }

    /// Stops this hub and serves its data again on its address, without faults: the service
    /// is back.
    pub async fn heal(self) -> TestHub {
        let addr = self.addr;
        let data = self.stop().await;
        TestHub::start_at(data, addr).await
    }

    /// A client of this hub's API.
    pub fn client(&self) -> Client {
        Client::new(&self.base_url).expect("the hub's base URL is valid")
    }

    /// The share URL of `link` as this hub answers it.
    pub fn link_url(&self, link: &Link) -> String {
        format!(
            "http://{}/{}?secret={}",
            self.addr,
            link.id,
            link.download_secret.expose()
        )
    }

    /// `base_url` + `path` (which starts with `/`), for raw requests.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops serving and waits until the server is done; the data folder stays for a next hub.
    pub async fn stop(mut self) -> DataDir {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the hub task does not panic")
                .expect("the hub serves without I/O errors");
        }
        self.data.clone()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A portal as the operator made it.
#[derive(Debug, Clone)]
pub struct TestPortal {
    pub id: String,
    pub subdomain: String,
    pub access_code: Option<Secret>,
}

/// A hub with one team ("Post House"), its API key, an open portal ("dailies") and one behind
/// an access code ("vault"), and a client of it.
pub struct World {
    pub hub: TestHub,
    pub client: Client,
    pub team_id: String,
    pub api_key: Secret,
    pub open_portal: TestPortal,
    pub coded_portal: TestPortal,
}

pub const TEAM_NAME: &str = "Post House";

impl World {
    pub async fn new() -> World {
        World::on(TestHub::start().await)
    }

    /// A world whose hub keeps its files on its disk, to be faulted (see [`DataDir::on_disk`]).
    pub async fn on_disk() -> World {
        World::on(TestHub::start_with(DataDir::on_disk(), HubOptions::default()).await)
    }

    /// A world whose storage waits `delay` before answering each request.
    pub async fn slow(delay: Duration) -> World {
        let faults = Faults {
            delay,
            ..Faults::default()
        };
        World::on(TestHub::start_with(DataDir::on_disk(), HubOptions::faults(faults)).await)
    }

    /// The world set up on `hub` (whose data folder must not have it already).
    pub fn on(hub: TestHub) -> World {
        let operator = &hub.operator;
        let team_id = operator
            .add_team(TEAM_NAME, None)
            .expect("a new hub takes a team");
        let api_key = operator
            .add_api_key(&team_id, None)
            .expect("a team takes an API key");
        let open_portal = TestPortal {
            id: operator
                .add_portal(&team_id, "dailies", Some("Dailies"), None)
                .expect("a team takes a portal"),
            subdomain: "dailies".into(),
            access_code: None,
        };
        let code = Secret::new("open sesame");
        let coded_portal = TestPortal {
            id: operator
                .add_portal(&team_id, "vault", Some("Vault"), Some(&code))
                .expect("a team takes a portal with an access code"),
            subdomain: "vault".into(),
            access_code: Some(code),
        };
        World {
            client: hub.client(),
            hub,
            team_id,
            api_key,
            open_portal,
            coded_portal,
        }
    }

    /// A new (empty) team package.
    pub async fn team_package(&self, req: CreateTeamPackage) -> CreatedPackage {
        self.client
            .create_team_package(&self.team_id, &self.api_key, &req)
            .await
            .expect("the team creates a package with its API key")
    }

    /// A team package holding `files`, finalized.
    pub async fn upload(&self, files: Vec<FileSpec>) -> UploadedPackage {
        let package = self.team_package(named("dailies day 1")).await;
        let uploaded = upload_files(&self.client, package, files)
            .await
            .expect("the files upload");
        self.client
            .finalize_package(&uploaded.id, &uploaded.token)
            .await
            .expect("the package finalizes");
        uploaded
    }

    /// A team package holding `files`, every file finalized but not the package.
    pub async fn upload_unfinalized(&self, files: Vec<FileSpec>) -> UploadedPackage {
        let package = self.team_package(named("work in progress")).await;
        upload_files(&self.client, package, files)
            .await
            .expect("the files upload")
    }

    /// A portal package holding `files`, finalized.
    pub async fn portal_upload(
        &self,
        portal: &TestPortal,
        name: &str,
        files: Vec<FileSpec>,
    ) -> UploadedPackage {
        let req = CreatePortalPackage {
            name: name.into(),
            description: String::new(),
            sender: "editor@example.com".into(),
            access_code: portal.access_code.clone(),
            metadata: None,
        };
        let package = self
            .client
            .create_portal_package(&portal.id, &req)
            .await
            .expect("the portal takes a package");
        let uploaded = upload_files(&self.client, package, files)
            .await
            .expect("the files upload");
        self.client
            .finalize_package(&uploaded.id, &uploaded.token)
            .await
            .expect("the package finalizes");
        uploaded
    }

    /// A finalized team package holding `files`, and the share URL of a new link to it.
    pub async fn shared(&self, files: Vec<FileSpec>) -> (UploadedPackage, String) {
        let package = self.upload(files).await;
        let link = self.share(&package, CreateLink::default()).await;
        let url = self.hub.link_url(&link);
        (package, url)
    }

    /// A link to `package`.
    pub async fn share(&self, package: &UploadedPackage, req: CreateLink) -> Link {
        self.client
            .create_link(&package.id, &package.token, &req)
            .await
            .expect("the sender creates a link")
    }
}

/// Every file of the package behind the share URL `link`, by name, with the bytes storage
/// serves for it.
pub async fn shared_contents(client: &Client, link: &str) -> Vec<(String, Vec<u8>)> {
    let parsed = LinkUrl::parse(link).expect("a share URL");
    let info = client
        .link(&parsed.link_id, &parsed.secret, None)
        .await
        .expect("the link opens");
    let files = client
        .package_files(&info.package_id, &info.package_token)
        .await
        .expect("the package lists its files");
    let mut contents = Vec::new();
    for file in files {
        let url = client
            .download_url(&info.package_id, &file.id, &info.package_token)
            .await
            .expect("a download URL");
        let response = client.get_range(&url, None).await.expect("storage serves");
        let bytes = response.bytes().await.expect("the whole body");
        contents.push((file.name, bytes.to_vec()));
    }
    contents
}

/// A team package request with only a name.
pub fn named(name: &str) -> CreateTeamPackage {
    CreateTeamPackage {
        name: name.into(),
        ..CreateTeamPackage::default()
    }
}

/// One entry to upload: a file with its bytes, or an (empty) directory.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub kind: FileKind,
    pub name: String,
    pub path: String,
    pub bytes: Bytes,
    pub chunk_size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

impl FileSpec {
    /// A file at the package root, uploaded in parts of the smallest size storage takes.
    pub fn file(name: &str, bytes: impl Into<Bytes>) -> FileSpec {
        FileSpec {
            kind: FileKind::File,
            name: name.into(),
            path: String::new(),
            bytes: bytes.into(),
            chunk_size: MIN_PART as u64,
            last_modified: Some(Utc::now().trunc_subsecs(3)),
        }
    }

    /// An empty folder to recreate.
    pub fn directory(name: &str) -> FileSpec {
        FileSpec {
            kind: FileKind::Directory,
            chunk_size: 0,
            ..FileSpec::file(name, Bytes::new())
        }
    }

    /// In folder `path` of the package.
    pub fn at(mut self, path: &str) -> FileSpec {
        self.path = path.into();
        self
    }

    pub fn chunk_size(mut self, chunk_size: usize) -> FileSpec {
        self.chunk_size = chunk_size as u64;
        self
    }

    pub fn request(&self) -> AddFile {
        AddFile {
            kind: self.kind,
            name: self.name.clone(),
            path: self.path.clone(),
            last_modified: self.last_modified,
            size: self.bytes.len() as u64,
            chunk_size: self.chunk_size,
        }
    }
}

/// A file as uploaded: its id and what went up.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub id: String,
    pub spec: FileSpec,
    /// The ETags storage answered, part 1 first.
    pub etags: Vec<String>,
}

/// A package as uploaded: its id, its (upload) token, its files in the order given.
#[derive(Debug, Clone)]
pub struct UploadedPackage {
    pub id: String,
    pub token: Secret,
    pub files: Vec<UploadedFile>,
}

impl UploadedPackage {
    pub fn file(&self, name: &str) -> &UploadedFile {
        self.files
            .iter()
            .find(|f| f.spec.name == name)
            .unwrap_or_else(|| panic!("no file named {name:?} was uploaded"))
    }

    /// The bytes of all files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.spec.bytes.len() as u64).sum()
    }
}

/// The chunk size the hub settles on for `spec` (the client must cut parts the same way).
pub fn chunk_size_of(spec: &FileSpec) -> u64 {
    PackageSpec::default().chunk_size_for(spec.bytes.len() as u64, spec.chunk_size)
}

/// Registers `spec` in the package and, for a file, creates its multipart upload: the file's
/// registration and its upload id.
pub async fn start_file(
    client: &Client,
    package_id: &str,
    token: &Secret,
    spec: &FileSpec,
) -> Result<(AddedFile, Option<String>), CloudError> {
    let added = client.add_file(package_id, token, &spec.request()).await?;
    if spec.kind == FileKind::Directory {
        return Ok((added, None));
    }
    let blueprint = added
        .create_blueprint
        .as_ref()
        .ok_or_else(|| CloudError::Protocol {
            message: "the hub answered no create_blueprint for a file with bytes".into(),
        })?;
    let upload_id = client.create_multipart(blueprint).await?;
    Ok((added, Some(upload_id)))
}

/// Part blueprints for parts `1..=count`, asked for [`PART_BATCH`] at a time.
pub async fn part_blueprints(
    client: &Client,
    package_id: &str,
    file_id: &str,
    token: &Secret,
    upload_id: &str,
    count: u64,
) -> Result<Vec<Blueprint>, CloudError> {
    let mut blueprints = Vec::with_capacity(count as usize);
    let mut start = 0;
    while start < count {
        let n = PART_BATCH.min(count - start);
        let batch = client
            .part_urls(package_id, file_id, token, upload_id, start, n)
            .await?;
        assert_eq!(
            batch.len() as u64,
            n,
            "the hub answers as many URLs as asked"
        );
        blueprints.extend(batch);
        start += n;
    }
    Ok(blueprints)
}

/// `bytes` cut into parts of `chunk_size` (a zero-byte file is one empty part).
pub fn parts_of(bytes: &Bytes, chunk_size: u64) -> Vec<Bytes> {
    let count = PackageSpec::part_count(bytes.len() as u64, chunk_size);
    (0..count)
        .map(|i| {
            let start = (i * chunk_size) as usize;
            let end = ((i + 1) * chunk_size).min(bytes.len() as u64) as usize;
            bytes.slice(start..end)
        })
        .collect()
}

/// PUTs each part on its blueprint, [`PART_BATCH`] at a time, and returns the ETags in order.
pub async fn put_parts(
    client: &Client,
    blueprints: &[Blueprint],
    parts: &[Bytes],
) -> Result<Vec<String>, CloudError> {
    assert_eq!(blueprints.len(), parts.len(), "one blueprint per part");
    let mut etags = Vec::with_capacity(parts.len());
    for (blueprints, parts) in blueprints
        .chunks(PART_BATCH as usize)
        .zip(parts.chunks(PART_BATCH as usize))
    {
        let batch = blueprints.iter().zip(parts).map(|(blueprint, part)| {
            client.put_part(
                blueprint,
                reqwest::Body::from(part.clone()),
                part.len() as u64,
                None,
            )
        });
        etags.extend(try_join_all(batch).await?);
    }
    Ok(etags)
}

/// The finalize request for a file of `size` bytes whose parts answered `etags`.
pub fn finalize_request(
    size: u64,
    chunk_size: u64,
    upload_id: &str,
    etags: &[String],
) -> FinalizeFile {
    FinalizeFile {
        size,
        chunk_size,
        file_extras: FileExtras {
            upload_id: upload_id.into(),
        },
        chunk_extras: etags
            .iter()
            .enumerate()
            .map(|(i, etag)| ChunkExtra {
                part_number: i as u32 + 1,
                etag: etag.clone(),
            })
            .collect(),
    }
}

/// The whole upload of one entry: add, create the multipart upload, ask for the part URLs, PUT
/// the parts, finalize the file. A directory is only added.
pub async fn upload_file(
    client: &Client,
    package_id: &str,
    token: &Secret,
    spec: FileSpec,
) -> Result<UploadedFile, CloudError> {
    let (added, upload_id) = start_file(client, package_id, token, &spec).await?;
    let id = added.file.id;
    let Some(upload_id) = upload_id else {
        return Ok(UploadedFile {
            id,
            spec,
            etags: Vec::new(),
        });
    };
    let chunk_size = chunk_size_of(&spec);
    let parts = parts_of(&spec.bytes, chunk_size);
    let blueprints = part_blueprints(
        client,
        package_id,
        &id,
        token,
        &upload_id,
        parts.len() as u64,
    )
    .await?;
    let etags = put_parts(client, &blueprints, &parts).await?;
    let finalize = finalize_request(spec.bytes.len() as u64, chunk_size, &upload_id, &etags);
    client
        .finalize_file(package_id, &id, token, &finalize)
        .await?;
    Ok(UploadedFile { id, spec, etags })
}

/// Uploads `files` into `package` one after the other (the package is not finalized).
pub async fn upload_files(
    client: &Client,
    package: CreatedPackage,
    files: Vec<FileSpec>,
) -> Result<UploadedPackage, CloudError> {
    let mut uploaded = Vec::with_capacity(files.len());
    for spec in files {
        uploaded.push(upload_file(client, &package.id, &package.access_token, spec).await?);
    }
    Ok(UploadedPackage {
        id: package.id,
        token: package.access_token,
        files: uploaded,
    })
}

/// A file's bytes, `range` inclusive, as the download flow gets them (download URL, then GET).
pub async fn download(
    client: &Client,
    package_id: &str,
    token: &Secret,
    file_id: &str,
    range: Option<(u64, u64)>,
) -> Result<Vec<u8>, CloudError> {
    let url = client.download_url(package_id, file_id, token).await?;
    let response = client.get_range(&url, range).await?;
    read_body(response).await
}

/// A storage answer's body, its failures mapped like the agent maps them.
pub async fn read_body(response: reqwest::Response) -> Result<Vec<u8>, CloudError> {
    response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| CloudError::transport("download", e))
}

/// `len` bytes that depend only on `seed` (splitmix64): reproducible, incompressible, and
/// different for every seed, so a misplaced range shows.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut bytes = vec![0u8; len];
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&next().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = next().to_le_bytes();
    rest.copy_from_slice(&last[..rest.len()]);
    bytes
}

/// MD5 of `bytes`, lowercase hex: what S3 puts (quoted) in a part's ETag.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// A plain HTTP client for what the typed one cannot send (or would not show).
pub fn raw_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a plain reqwest client builds")
}

/// Runs `f` and says how long it took.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = std::time::Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

/// The variant of a [`CloudError`], for assertions that read like the spec.
pub fn kind(error: &CloudError) -> &'static str {
    match error {
        CloudError::Auth { .. } => "auth",
        CloudError::NotFound { .. } => "not_found",
        CloudError::Expired { .. } => "expired",
        CloudError::Quarantined { .. } => "quarantined",
        CloudError::Rejected { .. } => "rejected",
        CloudError::Transient { .. } => "transient",
        CloudError::Protocol { .. } => "protocol",
        CloudError::InvalidUrl { .. } => "invalid_url",
    }
}

/// Asserts that `result` failed as `expected` (a [`kind`]) and returns the error.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(result: Result<T, CloudError>, expected: &str) -> CloudError {
    match result {
        Ok(value) => panic!("expected a {expected} error, got Ok({value:?})"),
        Err(error) => {
            assert_eq!(kind(&error), expected, "{error:?}");
            error
        }
    }
}
