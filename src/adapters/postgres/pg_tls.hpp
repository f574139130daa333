// Transport security of the PostgreSQL connections (libpq's sslmode and sslrootcert).
// A non-empty value is passed to libpq after the URL, so it overrides an sslmode or
// sslrootcert the URL itself carries; an empty one leaves the URL's value (or libpq's
// default: sslmode=prefer, sslrootcert=~/.postgresql/root.crt).
#pragma once
#include <string>

namespace ps {

struct PgTls {
  std::string sslmode;      // disable, allow, prefer, require, verify-ca, verify-full
  std::string sslrootcert;  // PEM file of the CA(s) the server certificate must chain to
};

}  // namespace ps
