#include "sync/text_fold.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kcnet::sync {
namespace {

using ::testing::ElementsAre;

TEST(FoldForSearchTest, VietnameseDiacriticsCaseAndDBarFoldTogether) {
  EXPECT_EQ(FoldForSearch("Hà Nội"), "ha noi");
  EXPECT_EQ(FoldForSearch("HA NOI"), "ha noi");
  EXPECT_EQ(FoldForSearch("HÀ NỘI"), "ha noi");
  EXPECT_EQ(FoldForSearch("Đà Nẵng"), "da nang");
  EXPECT_EQ(FoldForSearch("đường"), "duong");
  EXPECT_EQ(FoldForSearch("Nguyễn Thị Hường"), "nguyen thi huong");
  EXPECT_EQ(FoldForSearch("mây tre đan Phú Vinh"), "may tre dan phu vinh");
}

TEST(FoldForSearchTest, EveryVietnameseVowelFolds) {
  EXPECT_EQ(FoldForSearch("àáảãạăằắẳẵặâầấẩẫậ"), std::string(17, 'a'));
  EXPECT_EQ(FoldForSearch("ÈÉẺẼẸÊỀẾỂỄỆ"), std::string(11, 'e'));
  EXPECT_EQ(FoldForSearch("ìíỉĩị"), "iiiii");
  EXPECT_EQ(FoldForSearch("òóỏõọôồốổỗộơờớởỡợ"), std::string(17, 'o'));
  EXPECT_EQ(FoldForSearch("ùúủũụưừứửữự"), std::string(11, 'u'));
  EXPECT_EQ(FoldForSearch("ỳýỷỹỵ"), "yyyyy");
}

TEST(FoldForSearchTest, DecomposedInputFoldsLikePrecomposed) {
  // "Hà Nội" typed with combining marks (NFD): a + U+0300, o + U+0323 + U+0302.
  EXPECT_EQ(FoldForSearch("Ha\xCC\x80 No\xCC\xA3\xCC\x82i"), "ha noi");
}

TEST(FoldForSearchTest, OtherTextPassesAndInvalidBytesDrop) {
  EXPECT_EQ(FoldForSearch("Gốm 2024 – số 1"), "gom 2024 – so 1");
  EXPECT_EQ(FoldForSearch("ab\xff"
                          "c"),
            "abc");
  EXPECT_EQ(FoldForSearch(""), "");
}

TEST(SearchWordsTest, SplitsOnPunctuationAndSpace) {
  EXPECT_THAT(SearchWords("  Cơ sở: mây-tre, ĐAN!  "),
              ElementsAre("co", "so", "may", "tre", "dan"));
  EXPECT_TRUE(SearchWords(" ,.; ").empty());
}

}  // namespace
}  // namespace kcnet::sync
