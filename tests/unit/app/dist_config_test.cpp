// DistConfig's transport security options: every validation rule names the option it
// refuses, and no error message ever carries the SASL password.
#include <gtest/gtest.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "app/config.hpp"
#include "app/dist_config.hpp"

namespace ps::app {
namespace {

namespace fs = std::filesystem;

// A self-signed CA certificate (public; its key was thrown away): OpenSSL loads it.
constexpr const char* kCaPem = R"(-----BEGIN CERTIFICATE-----
MIIBmTCCAT+gAwIBAgIUWEhQMc9VQUUtuQxXnykiJA90aBowCgYIKoZIzj0EAwIw
ITEfMB0GA1UEAwwWcGF5c3RyZWFtIHVuaXQgdGVzdCBDQTAgFw0yNjEyMDIwNTUz
MDhaGA8yMTI2MTEwODA1NTMwOFowITEfMB0GA1UEAwwWcGF5c3RyZWFtIHVuaXQg
dGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABGzaZ8tsntVKIT85L13x
UUYFHJ6/VaNO11uctd3osjxVi35nMWKy4TQ0wswIXgQbeexjkN/F5l7o1KVqA5fz
fTyjUzBRMB0GA1UdDgQWBBQmHh0Jdrc+LZR9AtFYX6cCBslVITAfBgNVHSMEGDAW
gBQmHh0Jdrc+LZR9AtFYX6cCBslVITAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49
BAMCA0gAMEUCIHe9MYWK66VQ03g5B7/mlZFc1NUn3le8A3Sl6Z2svwiNAiEA5Hb7
KsaGsQcu3LpdDgispp4t0SqR41nl4HNlkvdVMYE=
-----END CERTIFICATE-----
)";
constexpr const char* kPassword = "pw-Sup3rS3cret-never-printed";

class DistConfigSecurity : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ps_dist_config_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    ca_ = write("ca.pem", kCaPem);
    garbage_ = write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    missing_ = (dir_ / "missing.pem").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& content) {
    auto p = dir_ / name;
    std::ofstream(p) << content;
    return p.string();
  }

  // A configuration the Kafka and PostgreSQL roles accept.
  static DistConfig base() {
    DistConfig d;
    d.kafka_brokers = "127.0.0.1:9092";
    d.postgres_url = "postgresql://paystream@127.0.0.1/paystream";
    return d;
  }
  static DistConfig sasl_ssl() {
    DistConfig d = base();
    d.kafka_security_protocol = "sasl_ssl";
    d.kafka_sasl_mechanism = "SCRAM-SHA-512";
    d.kafka_sasl_username = "paystream";
    d.kafka_sasl_password = kPassword;
    return d;
  }
  // "ok", or the param of the error; the message must never hold the password.
  static std::string param_of(const DistConfig& d) {
    auto r = d.validate({true, true, false});
    if (r.ok()) return "ok";
    EXPECT_EQ(r.error().code, "config_invalid");
    EXPECT_EQ(r.error().message.find(kPassword), std::string::npos) << r.error().message;
    return r.error().param;
  }

  fs::path dir_;
  std::string ca_, garbage_, missing_;
};

TEST_F(DistConfigSecurity, DefaultsArePlaintextAndValid) {
  DistConfig d = base();
  EXPECT_EQ(param_of(d), "ok");
  auto props = d.kafka_security_properties();
  ASSERT_TRUE(props.ok());
  EXPECT_TRUE(props->empty());  // librdkafka's own default: plaintext
  EXPECT_TRUE(d.postgres_tls().sslmode.empty());
  EXPECT_TRUE(d.postgres_tls().sslrootcert.empty());
}

TEST_F(DistConfigSecurity, KafkaProtocolMustBeKnown) {
  DistConfig d = base();
  d.kafka_security_protocol = "tls";
  EXPECT_EQ(param_of(d), "kafka_security_protocol");
  EXPECT_NE(d.validate({}).error().message.find("--kafka-security-protocol"), std::string::npos);
  d.kafka_security_protocol = "SSL";  // librdkafka's spelling is accepted too
  EXPECT_EQ(param_of(d), "ok");
}

TEST_F(DistConfigSecurity, SslWithAndWithoutCa) {
  DistConfig d = base();
  d.kafka_security_protocol = "ssl";
  EXPECT_EQ(param_of(d), "ok");  // no CA file: the system's CAs
  auto props = d.kafka_security_properties();
  ASSERT_TRUE(props.ok());
  EXPECT_EQ(props->at("security.protocol"), "ssl");
  EXPECT_EQ(props->at("ssl.endpoint.identification.algorithm"), "https");
  EXPECT_EQ(props->count("ssl.ca.location"), 0u);
  EXPECT_EQ(props->count("sasl.mechanisms"), 0u);
  d.kafka_ssl_ca_location = ca_;
  EXPECT_EQ(param_of(d), "ok");
  EXPECT_EQ(d.kafka_security_properties()->at("ssl.ca.location"), ca_);
}

TEST_F(DistConfigSecurity, CaLocationMustBeReadableAndLoadable) {
  DistConfig d = base();
  d.kafka_security_protocol = "ssl";
  d.kafka_ssl_ca_location = missing_;
  EXPECT_EQ(param_of(d), "kafka_ssl_ca_location");
  EXPECT_NE(d.validate({true, false, false}).error().message.find(missing_), std::string::npos);
  // Readable but not a certificate: librdkafka's own check, at start-up.
  d.kafka_ssl_ca_location = garbage_;
  EXPECT_EQ(param_of(d), "kafka_ssl_ca_location");
  EXPECT_NE(d.validate({true, false, false}).error().message.find("ssl.ca.location"), std::string::npos)
      << d.validate({true, false, false}).error().message;
}

TEST_F(DistConfigSecurity, CaLocationNeedsATlsProtocol) {
  DistConfig d = base();
  d.kafka_ssl_ca_location = ca_;
  EXPECT_EQ(param_of(d), "kafka_ssl_ca_location");
  d.kafka_security_protocol = "sasl_plaintext";
  d.kafka_sasl_mechanism = "PLAIN";
  d.kafka_sasl_username = "u";
  d.kafka_sasl_password = kPassword;
  EXPECT_EQ(param_of(d), "kafka_ssl_ca_location");
}

TEST_F(DistConfigSecurity, SaslSslWithEveryMechanism) {
  for (const char* m : {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}) {
    DistConfig d = sasl_ssl();
    d.kafka_sasl_mechanism = m;
    d.kafka_ssl_ca_location = ca_;
    EXPECT_EQ(param_of(d), "ok") << m;
    auto props = d.kafka_security_properties();
    ASSERT_TRUE(props.ok());
    EXPECT_EQ(props->at("security.protocol"), "sasl_ssl");
    EXPECT_EQ(props->at("sasl.mechanisms"), m);
    EXPECT_EQ(props->at("sasl.username"), "paystream");
    EXPECT_EQ(props->at("sasl.password"), kPassword);
    EXPECT_EQ(props->at("ssl.ca.location"), ca_);
  }
  DistConfig d = sasl_ssl();
  d.kafka_security_protocol = "SASL_PLAINTEXT";
  EXPECT_EQ(param_of(d), "ok");
  EXPECT_EQ(d.kafka_security_properties()->at("security.protocol"), "sasl_plaintext");
  EXPECT_EQ(d.kafka_security_properties()->count("ssl.endpoint.identification.algorithm"), 0u);
}

TEST_F(DistConfigSecurity, SaslNeedsMechanismUserAndPassword) {
  DistConfig d = sasl_ssl();
  d.kafka_sasl_mechanism.clear();
  EXPECT_EQ(param_of(d), "kafka_sasl_mechanism");
  d.kafka_sasl_mechanism = "GSSAPI";  // librdkafka knows it; paystream does not offer Kerberos
  EXPECT_EQ(param_of(d), "kafka_sasl_mechanism");
  d.kafka_sasl_mechanism = "scram-sha-512";
  EXPECT_EQ(param_of(d), "kafka_sasl_mechanism");
  d = sasl_ssl();
  d.kafka_sasl_username.clear();
  EXPECT_EQ(param_of(d), "kafka_sasl_username");
  d = sasl_ssl();
  d.kafka_sasl_password.clear();
  EXPECT_EQ(param_of(d), "kafka_sasl_password");
}

TEST_F(DistConfigSecurity, PasswordFromAFile) {
  DistConfig d = sasl_ssl();
  d.kafka_sasl_password.clear();
  d.kafka_sasl_password_file = write("sasl-password", std::string(kPassword) + "\n");
  EXPECT_EQ(param_of(d), "ok");
  EXPECT_EQ(d.kafka_security_properties()->at("sasl.password"), kPassword);  // without the newline
  d.kafka_sasl_password = kPassword;
  EXPECT_EQ(param_of(d), "kafka_sasl_password");  // both: which one was meant?
  d.kafka_sasl_password.clear();
  d.kafka_sasl_password_file = missing_;
  EXPECT_EQ(param_of(d), "kafka_sasl_password_file");
  d.kafka_sasl_password_file = write("empty", "\n");
  EXPECT_EQ(param_of(d), "kafka_sasl_password_file");
}

TEST_F(DistConfigSecurity, SaslSettingsNeedASaslProtocol) {
  for (const char* proto : {"plaintext", "ssl"}) {
    DistConfig d = sasl_ssl();
    d.kafka_security_protocol = proto;
    EXPECT_EQ(param_of(d), "kafka_security_protocol") << proto;
    EXPECT_NE(d.validate({}).error().message.find("--kafka-sasl-mechanism"), std::string::npos);
    d = base();
    d.kafka_security_protocol = proto;
    d.kafka_sasl_password = kPassword;
    EXPECT_EQ(param_of(d), "kafka_security_protocol") << proto;
    d.kafka_sasl_password.clear();
    d.kafka_sasl_password_file = "/run/secrets/kafka";
    EXPECT_EQ(param_of(d), "kafka_security_protocol") << proto;
  }
}

TEST_F(DistConfigSecurity, PostgresSslmodeAndRootCert) {
  DistConfig d = base();
  d.postgres_sslmode = "strict";
  EXPECT_EQ(param_of(d), "postgres_sslmode");
  EXPECT_NE(d.validate({}).error().message.find("--postgres-sslmode"), std::string::npos);
  for (const char* mode : {"disable", "allow", "prefer", "require"}) {
    d.postgres_sslmode = mode;
    EXPECT_EQ(param_of(d), "ok") << mode;
  }
  for (const char* mode : {"verify-ca", "verify-full"}) {
    d.postgres_sslmode = mode;
    d.postgres_sslrootcert.clear();
    EXPECT_EQ(param_of(d), "postgres_sslrootcert") << mode;
    d.postgres_sslrootcert = missing_;
    EXPECT_EQ(param_of(d), "postgres_sslrootcert") << mode;
    d.postgres_sslrootcert = ca_;
    EXPECT_EQ(param_of(d), "ok") << mode;
    EXPECT_EQ(d.postgres_tls().sslmode, mode);
    EXPECT_EQ(d.postgres_tls().sslrootcert, ca_);
  }
  d.postgres_sslmode = "disable";
  EXPECT_EQ(param_of(d), "postgres_sslrootcert");  // a CA that nothing would use
  d.postgres_sslmode.clear();                       // the URL's sslmode
  EXPECT_EQ(param_of(d), "ok");
}

TEST_F(DistConfigSecurity, RedisOverTlsIsRefusedWithTheReason) {
  DistConfig d = base();
  d.redis_url = "rediss://127.0.0.1:6380/0";
  d.redis_cache_url = "redis://127.0.0.1:6379/0";
  EXPECT_EQ(param_of(d), "redis_url");
  EXPECT_NE(d.validate({}).error().message.find("hiredis 0.14 has no TLS"), std::string::npos);
  d.redis_url = "redis://127.0.0.1:6379/0";
  d.redis_cache_url = "REDISS://:pw@127.0.0.1:6380/0";
  EXPECT_EQ(param_of(d), "redis_cache_url");
  EXPECT_EQ(d.validate({}).error().message.find("pw@"), std::string::npos);  // the URL is not quoted
}

TEST_F(DistConfigSecurity, FlagsAndEnvironmentFillTheOptions) {
  DistConfig d;
  CLI::App app;
  add_kafka_options(app, d);
  add_postgres_options(app, d);
  ::setenv("PAYSTREAM_KAFKA_SASL_PASSWORD", kPassword, 1);
  ::setenv("PAYSTREAM_POSTGRES_SSLMODE", "verify-full", 1);
  const char* argv[] = {"gateway", "--kafka-security-protocol", "sasl_ssl", "--kafka-sasl-mechanism", "PLAIN",
                        "--kafka-sasl-username", "ps", "--kafka-ssl-ca-location", "/etc/ca.pem",
                        "--postgres-sslrootcert", "/etc/pg-ca.pem"};
  app.parse(11, const_cast<char**>(argv));
  ::unsetenv("PAYSTREAM_KAFKA_SASL_PASSWORD");
  ::unsetenv("PAYSTREAM_POSTGRES_SSLMODE");
  EXPECT_EQ(d.kafka_security_protocol, "sasl_ssl");
  EXPECT_EQ(d.kafka_sasl_mechanism, "PLAIN");
  EXPECT_EQ(d.kafka_sasl_username, "ps");
  EXPECT_EQ(d.kafka_sasl_password, kPassword);
  EXPECT_EQ(d.kafka_ssl_ca_location, "/etc/ca.pem");
  EXPECT_EQ(d.postgres_sslmode, "verify-full");
  EXPECT_EQ(d.postgres_sslrootcert, "/etc/pg-ca.pem");
  // --help never shows a password (no default captured from the environment either).
  EXPECT_EQ(app.help().find(kPassword), std::string::npos);
  EXPECT_NE(app.help().find("--kafka-sasl-password-file"), std::string::npos);
}

}  // namespace
}  // namespace ps::app
