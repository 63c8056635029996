//! The cluster DNS against Capstan's Kubernetes API (in this process, over real HTTP),
//! asked over real UDP and TCP: Service, headless, ExternalName and pod records, SRV with
//! additionals, NXDOMAIN with the SOA, a deletion seen, truncation over UDP, forwarding to
//! a fake upstream (a UDP and TCP responder in this test), SERVFAIL when nothing can
//! answer; and the pod resolv.conf.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_agents::dns::{self, Config, Server};
use common::{eventually, start};
use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How long the test waits for one answer (far above any forward timeout used here).
const ANSWER_WAIT: Duration = Duration::from_secs(10);

fn query(name: &str, qtype: RecordType, edns_payload: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
    if let Some(size) = edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        m.edns = Some(edns);
    }
    m
}

fn check_reply(sent: &Message, bytes: &[u8]) -> Result<Message, String> {
    let reply = Message::from_vec(bytes).map_err(|e| format!("undecodable answer: {e}"))?;
    if reply.metadata.id != sent.metadata.id || reply.metadata.message_type != MessageType::Response {
        return Err(format!("not the answer to our query: {reply:?}"));
    }
    Ok(reply)
}

async fn ask_udp_with(server: SocketAddr, q: Message) -> Result<Message, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    socket
        .send(&q.to_vec().map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(ANSWER_WAIT, socket.recv(&mut buf))
        .await
        .map_err(|_| format!("no UDP answer in {ANSWER_WAIT:?}"))?
        .map_err(|e| e.to_string())?;
    check_reply(&q, &buf[..n])
}

async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message, String> {
    ask_udp_with(server, query(name, qtype, None)).await
}

async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message, String> {
    let q = query(name, qtype, None);
    let bytes = q.to_vec().map_err(|e| e.to_string())?;
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
        let n = stream.read_u16().await?;
        let mut answer = vec![0u8; usize::from(n)];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(ANSWER_WAIT, exchange)
        .await
        .map_err(|_| format!("no TCP answer in {ANSWER_WAIT:?}"))?
        .map_err(|e| e.to_string())?;
    check_reply(&q, &answer)
}

fn addresses(records: &[Record]) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

/// A nameserver on one loopback port, UDP and TCP, that answers every question with one A
/// record: 192.0.2.1 over UDP, 192.0.2.2 over TCP, and counts what it got.
struct FakeUpstream {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
}

fn fake_answer(bytes: &[u8], ip: Ipv4Addr) -> Option<Vec<u8>> {
    let q = Message::from_vec(bytes).ok()?;
    let mut reply = Message::response(q.metadata.id, q.metadata.op_code);
    reply.metadata.recursion_available = true;
    reply.metadata.recursion_desired = q.metadata.recursion_desired;
    reply.queries = q.queries.clone();
    for question in &q.queries {
        reply.add_answer(Record::from_rdata(question.name().clone(), 60, RData::A(A(ip))));
    }
    reply.to_vec().ok()
}

async fn fake_upstream() -> FakeUpstream {
    // UDP and TCP on one port number: bind UDP on port 0, then TCP on its number, which
    // something else may hold; try again with another port then.
    let mut tries = 0;
    let (udp, tcp, addr) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind the fake upstream");
        let addr = udp.local_addr().expect("addr");
        match TcpListener::bind(addr).await {
            Ok(tcp) => break (udp, tcp, addr),
            Err(e) => {
                tries += 1;
                assert!(tries < 100, "no port free for both UDP and TCP: {e}");
            }
        }
    };
    let udp_queries = Arc::new(AtomicUsize::new(0));
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    let counter = udp_queries.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            counter.fetch_add(1, Ordering::SeqCst);
            if let Some(answer) = fake_answer(&buf[..n], Ipv4Addr::new(192, 0, 2, 1)) {
                let _ = udp.send_to(&answer, from).await;
            }
        }
    });
    let counter = tcp_queries.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                while let Ok(n) = stream.read_u16().await {
                    let mut q = vec![0u8; usize::from(n)];
                    if stream.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let Some(answer) = fake_answer(&q, Ipv4Addr::new(192, 0, 2, 2)) else {
                        return;
                    };
                    let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&answer);
                    if stream.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FakeUpstream {
        addr,
        udp_queries,
        tcp_queries,
    }
}

fn local_config(upstreams: Vec<SocketAddr>) -> Config {
    let mut config = Config::new("127.0.0.1:0".parse().expect("addr"), upstreams);
    config.limits.forward_timeout_ms = 300;
    config
}

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let object: K = serde_json::from_value(value).expect("an object");
    api.create(&PostParams::default(), &object).await.expect("create")
}

#[tokio::test]
async fn services_endpoints_pods_and_forwarding_over_udp_and_tcp() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");

    let web: Service = create(
        &services,
        json!({"metadata": {"name": "web"},
               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                  {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    let web_ip: Ipv4Addr = web
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .expect("a ClusterIP")
        .parse()
        .expect("IPv4");
    create(
        &services,
        json!({"metadata": {"name": "db"},
               "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    let _: EndpointSlice = create(
        &slices,
        json!({"metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
               "addressType": "IPv4",
               "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
               "endpoints": [
                   {"addresses": ["10.1.0.1"], "hostname": "db-0", "conditions": {"ready": true}},
                   {"addresses": ["10.1.0.2"], "hostname": "db-1", "conditions": {"ready": true}},
                   {"addresses": ["10.1.0.3"], "hostname": "db-2", "conditions": {"ready": false}}]}),
    )
    .await;
    create(
        &services,
        json!({"metadata": {"name": "ext"},
               "spec": {"type": "ExternalName", "externalName": "db.example.org"}}),
    )
    .await;
    // Sixty endpoints: more than 512 bytes of A records.
    create(
        &services,
        json!({"metadata": {"name": "many"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
    )
    .await;
    let many: Vec<serde_json::Value> = (1..=60)
        .map(|i| json!({"addresses": [format!("10.2.0.{i}")]}))
        .collect();
    let _: EndpointSlice = create(
        &slices,
        json!({"metadata": {"name": "many-1", "labels": {"kubernetes.io/service-name": "many"}},
               "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}], "endpoints": many}),
    )
    .await;

    let upstream = fake_upstream().await;
    let server = Server::bind(local_config(vec![upstream.addr]))
        .await
        .expect("bind the DNS");
    let dns = server.local_addr();
    assert_ne!(dns.port(), 0);

    let checks = async {
        // Everything above was created before the first list: once `web` answers, the
        // whole index is there.
        let answer = eventually("web's A record", || async move {
            let m = ask_udp(dns, "web.default.svc.cluster.local.", RecordType::A).await?;
            (m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty())
                .then_some(m.clone())
                .ok_or(format!("{m:?}"))
        })
        .await;
        assert_eq!(addresses(&answer.answers), vec![web_ip]);
        assert!(answer.metadata.authoritative);
        assert_eq!(answer.answers[0].ttl, dns::TTL_DEFAULT_S);

        let m = ask_tcp(dns, "Web.Default.svc.cluster.local.", RecordType::A)
            .await
            .expect("TCP");
        assert_eq!(addresses(&m.answers), vec![web_ip], "over TCP, any case");

        let m = ask_udp(dns, "web.default.svc.cluster.local.", RecordType::AAAA)
            .await
            .expect("AAAA");
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

        // SRV for a named port, with the target's address in the additional section.
        let m = ask_udp(dns, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV)
            .await
            .expect("SRV");
        let RData::SRV(srv) = &m.answers[0].data else {
            panic!("not an SRV: {m:?}");
        };
        assert_eq!(
            (srv.port, srv.target.to_ascii()),
            (80, "web.default.svc.cluster.local.".to_owned())
        );
        assert_eq!(addresses(&m.additionals), vec![web_ip]);

        // PTR for the ClusterIP.
        let m = ask_udp(dns, &Name::from(web_ip).to_ascii(), RecordType::PTR)
            .await
            .expect("PTR");
        let RData::PTR(ptr) = &m.answers[0].data else {
            panic!("not a PTR: {m:?}");
        };
        assert_eq!(ptr.0.to_ascii(), "web.default.svc.cluster.local.");

        // Headless: the ready endpoints, per hostname, SRV per endpoint.
        let m = ask_udp(dns, "db.default.svc.cluster.local.", RecordType::A)
            .await
            .expect("db");
        assert_eq!(
            addresses(&m.answers),
            vec![Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2)]
        );
        let m = ask_udp(dns, "db-1.db.default.svc.cluster.local.", RecordType::A)
            .await
            .expect("db-1");
        assert_eq!(addresses(&m.answers), vec![Ipv4Addr::new(10, 1, 0, 2)]);
        let m = ask_udp(dns, "db-2.db.default.svc.cluster.local.", RecordType::A)
            .await
            .expect("db-2");
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "an unready endpoint has no name"
        );
        let m = ask_tcp(dns, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV)
            .await
            .expect("SRV");
        let mut targets: Vec<(u16, String)> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            vec![
                (5432, "db-0.db.default.svc.cluster.local.".to_owned()),
                (5432, "db-1.db.default.svc.cluster.local.".to_owned()),
            ]
        );
        assert_eq!(
            addresses(&m.additionals),
            vec![Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2)]
        );

        // ExternalName: the CNAME, then the target's address from the upstream.
        let m = ask_udp(dns, "ext.default.svc.cluster.local.", RecordType::A)
            .await
            .expect("ext");
        let RData::CNAME(cname) = &m.answers[0].data else {
            panic!("not a CNAME: {m:?}");
        };
        assert_eq!(cname.0.to_ascii(), "db.example.org.");
        assert_eq!(addresses(&m.answers), vec![Ipv4Addr::new(192, 0, 2, 1)]);
        let m = ask_udp(dns, "ext.default.svc.cluster.local.", RecordType::CNAME)
            .await
            .expect("CNAME");
        assert_eq!(m.answers.len(), 1, "a CNAME question gets only the CNAME: {m:?}");

        // Pod records.
        let m = ask_udp(dns, "10-244-1-5.default.pod.cluster.local.", RecordType::A)
            .await
            .expect("pod");
        assert_eq!(addresses(&m.answers), vec![Ipv4Addr::new(10, 244, 1, 5)]);

        // A name that does not exist: NXDOMAIN, the SOA in authority with the TTL.
        let m = ask_udp(dns, "nope.default.svc.cluster.local.", RecordType::A)
            .await
            .expect("nope");
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(m.authorities[0].ttl, 5);
        // Its parent exists (a Service is below it): no data, not NXDOMAIN.
        let m = ask_udp(dns, "default.svc.cluster.local.", RecordType::A)
            .await
            .expect("ns");
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));

        // Truncation: sixty A records do not fit 512 bytes over UDP...
        let m = ask_udp(dns, "many.default.svc.cluster.local.", RecordType::A)
            .await
            .expect("many");
        assert!(m.metadata.truncation, "TC over plain UDP");
        assert!(m.answers.is_empty());
        // ...they do with EDNS's larger size, and always over TCP.
        let m = ask_udp_with(dns, query("many.default.svc.cluster.local.", RecordType::A, Some(4096)))
            .await
            .expect("many with EDNS");
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        assert!(m.edns.is_some(), "EDNS answered with EDNS");
        let m = ask_tcp(dns, "many.default.svc.cluster.local.", RecordType::A)
            .await
            .expect("many over TCP");
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);

        // Outside the zone: relayed to the upstream, UDP as UDP, TCP as TCP.
        let before_udp = upstream.udp_queries.load(Ordering::SeqCst);
        let m = ask_udp(dns, "www.example.org.", RecordType::A)
            .await
            .expect("forwarded");
        assert_eq!(addresses(&m.answers), vec![Ipv4Addr::new(192, 0, 2, 1)]);
        assert!(upstream.udp_queries.load(Ordering::SeqCst) > before_udp);
        let m = ask_tcp(dns, "www.example.org.", RecordType::A)
            .await
            .expect("forwarded over TCP");
        assert_eq!(addresses(&m.answers), vec![Ipv4Addr::new(192, 0, 2, 2)]);
        assert!(upstream.tcp_queries.load(Ordering::SeqCst) >= 1);

        // The Service goes: its name goes.
        services.delete("web", &Default::default()).await.expect("delete web");
        eventually("web is NXDOMAIN after its deletion", || async move {
            let m = ask_udp(dns, "web.default.svc.cluster.local.", RecordType::A).await?;
            (m.metadata.response_code == ResponseCode::NXDomain)
                .then_some(())
                .ok_or(format!("{m:?}"))
        })
        .await;
    };
    tokio::select! {
        r = server.run(client) => panic!("the DNS server ended: {r:?}"),
        () = checks => {}
    }
}

#[tokio::test]
async fn servfail_before_the_first_list_and_without_an_answering_upstream() {
    // An API that is not there: the watches never list.
    let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone_addr = gone.local_addr().expect("addr");
    drop(gone);
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{gone_addr}").parse().expect("url"))).expect("client");

    // An upstream that never answers (its sockets are bound, never read): a UDP port whose
    // TCP twin is free too (another process may hold that one: pick again).
    let mut attempts = 0;
    let (silent, silent_tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        match TcpListener::bind(udp.local_addr().expect("addr")).await {
            Ok(tcp) => break (udp, tcp),
            Err(e) => {
                attempts += 1;
                assert!(attempts < 100, "no UDP port with a free TCP twin: {e}");
            }
        }
    };
    let quiet = Server::bind(local_config(vec![silent.local_addr().expect("addr")]))
        .await
        .expect("bind");
    let quiet_addr = quiet.local_addr();
    let alone = Server::bind(local_config(Vec::new())).await.expect("bind");
    let alone_addr = alone.local_addr();

    let checks = async {
        for dns in [quiet_addr, alone_addr] {
            let m = ask_udp(dns, "web.default.svc.cluster.local.", RecordType::A)
                .await
                .expect("in zone");
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "no index yet: {m:?}");
            let m = ask_udp(dns, "www.example.org.", RecordType::A)
                .await
                .expect("out of zone");
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::ServFail,
                "no upstream answer: {m:?}"
            );
            let m = ask_tcp(dns, "www.example.org.", RecordType::A)
                .await
                .expect("out of zone, TCP");
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::ServFail,
                "no upstream answer: {m:?}"
            );
        }
        // The query did reach the silent upstream.
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(ANSWER_WAIT, silent.recv_from(&mut buf))
            .await
            .expect("the forwarded query is waiting at the upstream")
            .expect("receive");
        let forwarded = Message::from_vec(&buf[..n]).expect("a DNS message");
        assert_eq!(forwarded.queries[0].name().to_ascii(), "www.example.org.");
        drop(silent_tcp);
    };
    tokio::select! {
        r = quiet.run(client.clone()) => panic!("the DNS server ended: {r:?}"),
        r = alone.run(client) => panic!("the DNS server ended: {r:?}"),
        () = checks => {}
    }
}

#[test]
fn resolv_conf_of_a_cluster_first_pod() {
    let text = dns::resolv_conf(
        IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
        "shop",
        "cluster.local",
        &[
            "corp.example.com.".to_owned(),
            "cluster.local".to_owned(),
            String::new(),
        ],
    );
    assert_eq!(
        text,
        "nameserver 10.96.0.10\n\
         search shop.svc.cluster.local svc.cluster.local cluster.local corp.example.com\n\
         options ndots:5\n"
    );
    // The kubelet's bound on search domains.
    let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    let text = dns::resolv_conf(IpAddr::V4(Ipv4Addr::LOCALHOST), "a", "cluster.local", &many);
    let search = text.lines().find(|l| l.starts_with("search ")).expect("a search line");
    assert_eq!(search.split_whitespace().count() - 1, dns::SEARCH_DOMAINS_MAX);
}

#[test]
fn upstreams_from_the_hosts_resolv_conf() {
    let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver  ::1 # local\n\
                ;nameserver 9.9.9.9\nnameserver fe80::1%eth0\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n\
                options edns0\n";
    let upstreams = dns::upstreams_from_resolv_conf(text);
    let expected: Vec<SocketAddr> = ["127.0.0.53:53", "[::1]:53", "1.1.1.1:53"]
        .iter()
        .map(|s| s.parse().expect("addr"))
        .collect();
    assert_eq!(upstreams, expected);
}
