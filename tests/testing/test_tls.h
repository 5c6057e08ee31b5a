// TestCertificates: a throwaway certificate authority and a server certificate it signed,
// made with the openssl command line in a test's temporary directory, for TLS round trips.
// The server certificate names localhost, 127.0.0.1 and ::1. When openssl is not
// installed (or fails), ok() is false and error() says why: the test then skips.
//
// Thread-safety: thread-compatible; the constructor runs openssl (std::system).
#ifndef KCNET_TESTS_TESTING_TEST_TLS_H_
#define KCNET_TESTS_TESTING_TEST_TLS_H_

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace kcnet::testing {

class TestCertificates {
 public:
  // Writes ca.pem, ca.key, server.pem and server.key into `dir` (which must exist).
  explicit TestCertificates(const std::string& dir) : dir_(dir) {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
      error_ = "openssl is not installed (apt-get install openssl): TLS test skipped";
      return;
    }
    {
      std::ofstream ext(dir_ + "/server.ext");
      ext << "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
             "extendedKeyUsage=serverAuth\n";
    }
    const std::string log = dir_ + "/openssl.log";
    const std::string commands =
        "cd '" + dir_ + "' && { " +
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=kcnet test CA' "
        "-keyout ca.key -out ca.pem && "
        "openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' "
        "-keyout server.key -out server.csr && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile server.ext -out server.pem; } >'" +
        log + "' 2>&1";
    if (std::system(commands.c_str()) != 0 || !std::filesystem::exists(server_cert())) {
      error_ = "openssl could not make the test certificates (see " + log + "): TLS test skipped";
    }
  }

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  std::string ca_cert() const { return dir_ + "/ca.pem"; }
  std::string server_cert() const { return dir_ + "/server.pem"; }
  std::string server_key() const { return dir_ + "/server.key"; }

 private:
  std::string dir_;
  std::string error_;
};

}  // namespace kcnet::testing

#endif  // KCNET_TESTS_TESTING_TEST_TLS_H_
