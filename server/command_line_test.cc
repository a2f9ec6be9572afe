#include "server/command_line.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, cl_count, 3, "how many, in widgets");
ABSL_FLAG(std::string, cl_name, "", "a name");
ABSL_FLAG(bool, cl_verbose, false, "say more");
ABSL_FLAG(absl::Duration, cl_timeout, absl::Seconds(30), "how long");
ABSL_FLAG(double, cl_rate, 1.0, "a rate");

namespace memserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// "run" takes every flag of this file but --cl_rate, which is "other"'s.
const Program& TestProgram() {
  static const auto* program = new Program{
      "prog",
      "does things.",
      "Exit codes: 0 ok.",
      {{"run", "[--cl_count N]", "runs", {}, {"cl_count", "cl_name", "cl_verbose", "cl_timeout"}},
       {"other", "[flags]", "does the other thing", {"server/command_line_test.cc"}, {}}}};
  return *program;
}

class CommandLineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::SetFlag(&FLAGS_cl_count, 3);
    absl::SetFlag(&FLAGS_cl_name, "");
    absl::SetFlag(&FLAGS_cl_verbose, false);
    absl::SetFlag(&FLAGS_cl_timeout, absl::Seconds(30));
    absl::SetFlag(&FLAGS_cl_rate, 1.0);
  }

  absl::StatusOr<ParsedCommandLine> Parse(std::vector<std::string> args) {
    args.insert(args.begin(), "prog");
    argv_.clear();
    storage_ = args;
    for (std::string& a : storage_) argv_.push_back(a.data());
    return ParseCommandLine(TestProgram(), static_cast<int>(argv_.size()), argv_.data());
  }

  std::string Error(std::vector<std::string> args) {
    absl::StatusOr<ParsedCommandLine> p = Parse(std::move(args));
    EXPECT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(p.status().message());
  }

 private:
  std::vector<std::string> storage_;
  std::vector<char*> argv_;
};

TEST_F(CommandLineTest, SetsFlagsInEveryForm) {
  auto p = Parse({"--cl_count", "7", "run", "-cl_name=x y", "--cl_verbose", "--", "--arg"});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_NE(p->command, nullptr);
  EXPECT_EQ(p->command->name, "run");
  EXPECT_FALSE(p->help);
  EXPECT_EQ(p->args, std::vector<std::string>{"--arg"});
  EXPECT_EQ(absl::GetFlag(FLAGS_cl_count), 7);
  EXPECT_EQ(absl::GetFlag(FLAGS_cl_name), "x y");
  EXPECT_TRUE(absl::GetFlag(FLAGS_cl_verbose));
  ASSERT_TRUE(Parse({"run", "--nocl_verbose", "--cl_count=-2"}).ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_cl_verbose));
  EXPECT_EQ(absl::GetFlag(FLAGS_cl_count), -2);
}

TEST_F(CommandLineTest, DurationTakesBareSeconds) {
  ASSERT_TRUE(Parse({"run", "--cl_timeout=5"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_cl_timeout), absl::Seconds(5));
  ASSERT_TRUE(Parse({"run", "--cl_timeout", "0.25"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_cl_timeout), absl::Milliseconds(250));
  ASSERT_TRUE(Parse({"run", "--cl_timeout=1m30s"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_cl_timeout), absl::Seconds(90));
  EXPECT_EQ(Error({"run", "--cl_timeout=soon"}),
            "--cl_timeout: expected a duration like 5s or 500ms (a bare number is seconds), got "
            "'soon' (see prog run --help)");
}

TEST_F(CommandLineTest, ErrorsAreOneLineNamingTheFlag) {
  EXPECT_EQ(Error({"run", "--bogus"}), "unknown flag --bogus (see prog run --help)");
  EXPECT_EQ(Error({"run", "--cl_count=many"}),
            "--cl_count: expected an integer, got 'many' (see prog run --help)");
  EXPECT_EQ(Error({"run", "--cl_count"}),
            "--cl_count: missing value, expected an integer (see prog run --help)");
  EXPECT_EQ(Error({"run", "--cl_verbose=maybe"}),
            "--cl_verbose: expected true or false, got 'maybe' (see prog run --help)");
  EXPECT_THAT(Error({"run", "--nocl_verbose=1"}), HasSubstr("--nocl_verbose takes no value"));
  EXPECT_EQ(Error({"run", "--cl_rate=2"}),
            "--cl_rate is a flag of 'prog other', not of 'prog run' (see prog run --help)");
  EXPECT_EQ(Error({"walk"}), "unknown command 'walk' (expected: run, other; see prog --help)");
  // A failed parse leaves the flag as it was.
  EXPECT_EQ(absl::GetFlag(FLAGS_cl_count), 3);
}

TEST_F(CommandLineTest, HelpWinsOverBadFlags) {
  for (const char* help : {"--help", "-h", "--helpfull", "-help"}) {
    auto p = Parse({"run", "--cl_count=many", help, "--bogus"});
    ASSERT_TRUE(p.ok()) << help << ": " << p.status();
    EXPECT_TRUE(p->help);
    ASSERT_NE(p->command, nullptr);
    EXPECT_EQ(p->command->name, "run");
  }
  auto p = Parse({"--help"});
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->help);
  EXPECT_EQ(p->command, nullptr);
}

TEST_F(CommandLineTest, HelpListsEachCommandsOwnFlags) {
  const Program& program = TestProgram();
  const std::string run = HelpText(program, &program.commands[0]);
  EXPECT_THAT(run, HasSubstr("prog run: runs\n"));
  EXPECT_THAT(run, HasSubstr("usage: prog run [--cl_count N]\n"));
  EXPECT_THAT(run, HasSubstr("  --cl_count (default: 3)\n      how many, in widgets\n"));
  EXPECT_THAT(run, HasSubstr("  --cl_timeout (default: 30s)\n"));
  EXPECT_THAT(run, HasSubstr("  --cl_name\n      a name\n"));
  EXPECT_THAT(run, HasSubstr("a bare number is seconds"));
  EXPECT_THAT(run, Not(HasSubstr("cl_rate")));
  const std::string other = HelpText(program, &program.commands[1]);
  EXPECT_THAT(other, HasSubstr("--cl_rate (default: 1)"));

  const std::string top = HelpText(program, nullptr);
  EXPECT_EQ(top.find("prog: does things."), 0u);
  EXPECT_THAT(top, Not(HasSubstr("prog: prog")));
  EXPECT_THAT(top, HasSubstr("  prog run [--cl_count N]\n      runs\n"));
  EXPECT_THAT(top, HasSubstr("prog COMMAND --help"));
  EXPECT_THAT(top, HasSubstr("Exit codes: 0 ok."));
  EXPECT_THAT(top, Not(HasSubstr("--cl_count (default")));
}

}  // namespace
}  // namespace memserve
