#include "server/attachments/sha256.h"

#include <openssl/evp.h>

#include <cstdlib>

namespace kcnet::server {

struct Sha256::Ctx {
  EVP_MD_CTX* md = nullptr;
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  if (ctx_->md == nullptr) std::abort();  // out of memory
  Reset();
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_->md); }

void Sha256::Reset() {
  if (EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) != 1) std::abort();
}

void Sha256::Update(absl::string_view data) {
  if (EVP_DigestUpdate(ctx_->md, data.data(), data.size()) != 1) std::abort();
}

std::string Sha256::Finish() {
  std::string out(32, '\0');
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx_->md, reinterpret_cast<unsigned char*>(out.data()), &n) != 1 ||
      n != 32) {
    std::abort();
  }
  return out;
}

}  // namespace kcnet::server
