// The benchmark shape-file parser (bench/shape_file.h): what a line may hold, the optional dtype
// field, and errors that name the file, the line and the rule.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "shape_file.h"

namespace {

using embag::DType;
using embag::bench::parse_shapes;
using embag::bench::Shape;

TEST(ShapeFile, FiveFieldsAreFloat32AndASixthNamesTheDtype) {
  std::vector<Shape> shapes;
  ASSERT_TRUE(parse_shapes("# comment\n1000,64,16,8,uniform\n\n10,3,2,1,zipf , bf16 # note\n"
                           "5,8,1,0,uniform,f64\n7,16,1,2,uniform,f16\n",
                           "t.txt", &shapes)
                  .ok());
  ASSERT_EQ(shapes.size(), 4u);
  EXPECT_EQ(shapes[0].rows, 1000);
  EXPECT_EQ(shapes[0].dim, 64);
  EXPECT_EQ(shapes[0].dtype, DType::kFloat32);
  EXPECT_EQ(shapes[1].dtype, DType::kBFloat16);
  EXPECT_EQ(shapes[1].line, 4);
  EXPECT_EQ(shapes[2].dtype, DType::kFloat64);
  EXPECT_EQ(shapes[3].dtype, DType::kFloat16);
  // The dtype is part of the problem: a float16 table is not the float32 one.
  Shape same = shapes[0];
  same.dtype = DType::kFloat16;
  EXPECT_FALSE(same.same_problem(shapes[0]));
}

TEST(ShapeFile, ErrorsNameTheLineAndTheRule) {
  std::vector<Shape> shapes;
  embag::Status s = parse_shapes("1,2,3,4,uniform\n1,2,3,4,uniform,f8\n", "t.txt", &shapes);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("t.txt:2"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("'f32', 'f64', 'f16' or 'bf16'"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("'f8'"), std::string::npos) << s.message();

  s = parse_shapes("1,2,3,4,uniform,f32,extra\n", "t.txt", &shapes);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("5 or 6"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("got 7"), std::string::npos) << s.message();

  s = parse_shapes("# nothing\n", "t.txt", &shapes);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("no shapes"), std::string::npos) << s.message();
}

}  // namespace
