#include "sync/text_fold.h"

#include <cstdint>

#include "absl/container/flat_hash_map.h"

namespace kcnet::sync {
namespace {

// Each line: the base letter, then every precomposed letter that folds to it (lower and
// upper case). Vietnamese first, then the common Latin-1 / Latin Extended-A letters.
constexpr struct {
  char base;
  const char* letters;
} kFolds[] = {
    {'a', "àáảãạăằắẳẵặâầấẩẫậÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬäåāąÄÅĀĄ"},
    {'e', "èéẻẽẹêềếểễệÈÉẺẼẸÊỀẾỂỄỆëēęěËĒĘĚ"},
    {'i', "ìíỉĩịÌÍỈĨỊîïīÎÏĪ"},
    {'o', "òóỏõọôồốổỗộơờớởỡợÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢöøōÖØŌ"},
    {'u', "ùúủũụưừứửữựÙÚỦŨỤƯỪỨỬỮỰûüūůÛÜŪŮ"},
    {'y', "ỳýỷỹỵỲÝỶỸỴÿŸ"},
    {'d', "đĐ"},
    {'c', "çćčÇĆČ"},
    {'n', "ñńňÑŃŇ"},
    {'s', "śšŚŠ"},
    {'z', "źżžŹŻŽ"},
};

// Decodes one UTF-8 code point at `text[*i]`, advancing `*i`; -1 for an invalid sequence
// (which advances one byte).
int32_t Decode(absl::string_view text, size_t* i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t b0 = byte(*i);
  int len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xe ? 3 : (b0 >> 3) == 0x1e ? 4 : 0;
  if (len == 0 || *i + len > text.size()) {
    ++*i;
    return -1;
  }
  int32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1f) : len == 3 ? (b0 & 0x0f) : (b0 & 0x07);
  for (int k = 1; k < len; ++k) {
    if ((byte(*i + k) & 0xc0) != 0x80) {
      ++*i;
      return -1;
    }
    cp = (cp << 6) | (byte(*i + k) & 0x3f);
  }
  *i += len;
  return cp;
}

void Encode(int32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

const absl::flat_hash_map<int32_t, char>& FoldTable() {
  static const auto* table = [] {
    auto* t = new absl::flat_hash_map<int32_t, char>();
    for (const auto& fold : kFolds) {
      const absl::string_view letters(fold.letters);
      for (size_t i = 0; i < letters.size();) {
        const int32_t cp = Decode(letters, &i);
        if (cp >= 0) (*t)[cp] = fold.base;
      }
    }
    return t;
  }();
  return *table;
}

bool IsCombiningMark(int32_t cp) { return cp >= 0x0300 && cp <= 0x036f; }

}  // namespace

std::string FoldForSearch(absl::string_view text) {
  const auto& table = FoldTable();
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const int32_t cp = Decode(text, &i);
    if (cp < 0 || IsCombiningMark(cp)) continue;
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp - 'A' + 'a' : cp));
      continue;
    }
    const auto it = table.find(cp);
    if (it != table.end()) {
      out.push_back(it->second);
    } else {
      Encode(cp, &out);
    }
  }
  return out;
}

std::vector<std::string> SearchWords(absl::string_view text) {
  const std::string folded = FoldForSearch(text);
  std::vector<std::string> words;
  std::string word;
  for (size_t i = 0; i < folded.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(folded[i]);
    const bool part = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c >= 0x80;
    if (part) {
      word.push_back(static_cast<char>(c));
    } else if (!word.empty()) {
      words.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

}  // namespace kcnet::sync
