//! `email`: a plain-text summary of the event sent by SMTP (STARTTLS, TLS or a plain local
//! relay; login when configured) to a list of recipients, through lettre.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Outcome, Payload};
use crate::cloud::dto::Secret;
use crate::config::SmtpTls;

pub(super) struct Smtp<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<&'a str>,
    pub password: Option<&'a Secret>,
    pub ca_file: Option<&'a std::path::Path>,
    pub from: &'a str,
    pub to: &'a [String],
}

pub(super) async fn send(smtp: &Smtp<'_>, payload: &Payload, timeout: Duration) -> Outcome {
    let message = match message(smtp, payload) {
        Ok(m) => m,
        Err(e) => return Outcome::Failed(e),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host)
        .port(smtp.port)
        .timeout(Some(timeout));
    if smtp.tls != SmtpTls::None {
        let parameters = match tls_parameters(smtp) {
            Ok(p) => p,
            Err(e) => return Outcome::Retry(e),
        };
        builder = builder.tls(match smtp.tls {
            SmtpTls::Tls => Tls::Wrapper(parameters),
            _ => Tls::Required(parameters),
        });
    }
    if let (Some(user), Some(password)) = (smtp.username, smtp.password) {
        builder = builder.credentials(Credentials::new(
            user.to_owned(),
            password.expose().to_owned(),
        ));
    }
    let transport = builder.build();
    match transport.send(message).await {
        Ok(response) => Outcome::Delivered(format!(
            "SMTP {} {}",
            response.code(),
            response.message().collect::<Vec<_>>().join(" ")
        )),
        // A 5xx answer (a recipient refused, a login rejected) will not change by itself.
        Err(e) if e.is_permanent() => Outcome::Failed(format!(
            "SMTP server {}:{} refused the message: {e}",
            smtp.host, smtp.port
        )),
        Err(e) => Outcome::Retry(format!("SMTP server {}:{}: {e}", smtp.host, smtp.port)),
    }
}

/// TLS to the server, checked against the public roots and `ca_file`'s certificates (read at
/// each attempt: a renewed certificate needs no restart).
fn tls_parameters(smtp: &Smtp<'_>) -> Result<TlsParameters, String> {
    let mut parameters = TlsParameters::builder(smtp.host.to_owned());
    if let Some(file) = smtp.ca_file {
        let pem = std::fs::read(file)
            .map_err(|e| format!("ca_file {}: cannot be read ({e})", file.display()))?;
        let certificate =
            Certificate::from_pem(&pem).map_err(|e| format!("ca_file {}: {e}", file.display()))?;
        parameters = parameters.add_root_certificate(certificate);
    }
    parameters
        .build()
        .map_err(|e| format!("TLS to {}: {e}", smtp.host))
}

fn message(smtp: &Smtp<'_>, payload: &Payload) -> Result<Message, String> {
    let mut builder = Message::builder()
        .from(
            smtp.from
                .parse()
                .map_err(|e| format!("from {:?}: {e}", smtp.from))?,
        )
        .subject(format!("[masv] {}", payload.headline()))
        .header(ContentType::TEXT_PLAIN);
    for to in smtp.to {
        builder = builder.to(to.parse().map_err(|e| format!("to {to:?}: {e}"))?);
    }
    builder
        .body(payload.summary())
        .map_err(|e| format!("cannot build the message: {e}"))
}
