#include "server/command_line.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace memserve {
namespace {

constexpr int kHelpWidth = 80;

bool BelongsTo(const absl::CommandLineFlag& flag, const Subcommand& command) {
  for (const std::string& name : command.flag_names) {
    if (flag.Name() == name) return true;
  }
  const std::string file = flag.Filename();
  for (const std::string& f : command.flag_files) {
    if (file == f) return true;
  }
  return false;
}

// The command's flags by name.
std::map<std::string, absl::CommandLineFlag*> FlagsOf(const Subcommand& command) {
  std::map<std::string, absl::CommandLineFlag*> out;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!flag->IsRetired() && BelongsTo(*flag, command)) out[std::string(name)] = flag;
  }
  return out;
}

// Every command's flags by name.
std::map<std::string, absl::CommandLineFlag*> FlagsOf(const Program& program) {
  std::map<std::string, absl::CommandLineFlag*> out;
  for (const Subcommand& c : program.commands) out.merge(FlagsOf(c));
  return out;
}

std::string SeeHelp(const Program& program, const Subcommand* command) {
  return command == nullptr ? absl::StrCat("see ", program.name, " --help")
                            : absl::StrCat("see ", program.name, " ", command->name, " --help");
}

std::string ExpectedForm(const absl::CommandLineFlag& flag) {
  if (flag.IsOfType<bool>()) return "true or false";
  if (flag.IsOfType<int>() || flag.IsOfType<int64_t>()) return "an integer";
  if (flag.IsOfType<unsigned>() || flag.IsOfType<uint64_t>()) return "an integer >= 0";
  if (flag.IsOfType<double>() || flag.IsOfType<float>()) return "a number";
  if (flag.IsOfType<absl::Duration>()) {
    return "a duration like 5s or 500ms (a bare number is seconds)";
  }
  return "a valid value";
}

// Sets `flag` from `value`; for a duration, a bare number is seconds.
bool SetFlag(absl::CommandLineFlag& flag, absl::string_view value) {
  std::string error;
  if (flag.ParseFrom(value, &error)) return true;
  double seconds = 0;
  if (flag.IsOfType<absl::Duration>() && absl::SimpleAtod(value, &seconds) &&
      std::isfinite(seconds)) {
    return flag.ParseFrom(absl::FormatDuration(absl::Seconds(seconds)), &error);
  }
  return false;
}

// One flag occurrence on the command line.
struct FlagArg {
  enum Problem { kNone, kUnknown, kMissingValue, kValueAfterNo };
  std::string spelled;  // as written, without "=value": "--max_queue"
  std::string name;     // the registered name ("ignore_eos" for --noignore_eos)
  std::string value;
  Problem problem = kNone;
};

bool IsHelpFlag(absl::string_view name) {
  return name == "help" || name == "h" || name == "helpfull" || name == "helpshort";
}

// Appends `text` to `out`, wrapped at kHelpWidth, each line indented by `indent`.
void AppendWrapped(absl::string_view text, int indent, std::string* out) {
  const std::string pad(indent, ' ');
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() &&
        static_cast<int>(pad.size() + line.size() + 1 + word.size()) > kHelpWidth) {
      absl::StrAppend(out, pad, line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(out, pad, line, "\n");
}

}  // namespace

absl::StatusOr<ParsedCommandLine> ParseCommandLine(const Program& program, int argc, char** argv) {
  const std::map<std::string, absl::CommandLineFlag*> known = FlagsOf(program);
  ParsedCommandLine parsed;
  std::vector<FlagArg> flags;
  std::vector<std::string> positional;
  bool flags_ended = false;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (flags_ended || arg.size() < 2 || arg[0] != '-') {
      positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_ended = true;
      continue;
    }
    absl::string_view body = arg.substr(absl::StartsWith(arg, "--") ? 2 : 1);
    FlagArg f;
    const size_t eq = body.find('=');
    const bool has_value = eq != absl::string_view::npos;
    f.name = std::string(body.substr(0, eq));
    if (has_value) f.value = std::string(body.substr(eq + 1));
    f.spelled = absl::StrCat("--", f.name);
    if (IsHelpFlag(f.name)) {
      parsed.help = true;
      continue;
    }
    auto it = known.find(f.name);
    if (it == known.end() && absl::StartsWith(f.name, "no")) {
      // --noflag: false, for a bool flag.
      auto positive = known.find(f.name.substr(2));
      if (positive != known.end() && positive->second->IsOfType<bool>()) {
        f.name = positive->first;
        f.value = "false";
        if (has_value) f.problem = FlagArg::kValueAfterNo;
        flags.push_back(std::move(f));
        continue;
      }
    }
    if (it == known.end()) {
      f.problem = FlagArg::kUnknown;
    } else if (!has_value) {
      if (it->second->IsOfType<bool>()) {
        f.value = "true";
      } else if (i + 1 < argc) {
        f.value = argv[++i];
      } else {
        f.problem = FlagArg::kMissingValue;
      }
    }
    flags.push_back(std::move(f));
  }

  if (!positional.empty()) {
    for (const Subcommand& c : program.commands) {
      if (c.name == positional[0]) parsed.command = &c;
    }
    if (parsed.command == nullptr) {
      std::vector<std::string> names;
      for (const Subcommand& c : program.commands) names.push_back(c.name);
      return absl::InvalidArgumentError(absl::StrCat("unknown command '", positional[0],
                                                     "' (expected: ", absl::StrJoin(names, ", "),
                                                     "; ", SeeHelp(program, nullptr), ")"));
    }
    parsed.args.assign(positional.begin() + 1, positional.end());
  }
  if (parsed.help) return parsed;

  const Subcommand* command = parsed.command;
  const std::string see = SeeHelp(program, command);
  const std::map<std::string, absl::CommandLineFlag*> own =
      command == nullptr ? known : FlagsOf(*command);
  for (const FlagArg& f : flags) {
    if (f.problem == FlagArg::kUnknown) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", f.spelled, " (", see, ")"));
    }
    auto it = own.find(f.name);
    if (it == own.end()) {
      std::vector<std::string> owners;
      for (const Subcommand& c : program.commands) {
        if (FlagsOf(c).count(f.name)) owners.push_back(absl::StrCat(program.name, " ", c.name));
      }
      return absl::InvalidArgumentError(
          absl::StrCat(f.spelled, " is a flag of '", absl::StrJoin(owners, "', '"), "', not of '",
                       program.name, " ", command->name, "' (", see, ")"));
    }
    absl::CommandLineFlag& flag = *it->second;
    if (f.problem == FlagArg::kMissingValue) {
      return absl::InvalidArgumentError(absl::StrCat(f.spelled, ": missing value, expected ",
                                                     ExpectedForm(flag), " (", see, ")"));
    }
    if (f.problem == FlagArg::kValueAfterNo) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.spelled, " takes no value (use --", f.name, "=false; ", see, ")"));
    }
    if (!SetFlag(flag, f.value)) {
      return absl::InvalidArgumentError(absl::StrCat(f.spelled, ": expected ", ExpectedForm(flag),
                                                     ", got '", f.value, "' (", see, ")"));
    }
  }
  return parsed;
}

std::string HelpText(const Program& program, const Subcommand* command) {
  std::string out;
  if (command == nullptr) {
    AppendWrapped(absl::StrCat(program.name, ": ", program.summary), 0, &out);
    absl::StrAppend(&out, "\nusage:\n");
    for (const Subcommand& c : program.commands) {
      absl::StrAppend(&out, "  ", program.name, " ", c.name, " ", c.synopsis, "\n");
      AppendWrapped(c.summary, 6, &out);
    }
    absl::StrAppend(&out, "\n`", program.name,
                    " COMMAND --help` lists the command's flags with their defaults.\n");
    AppendWrapped(program.footer, 0, &out);
    return out;
  }
  AppendWrapped(absl::StrCat(program.name, " ", command->name, ": ", command->summary), 0, &out);
  absl::StrAppend(&out, "\nusage: ", program.name, " ", command->name, " ", command->synopsis,
                  "\n\nflags:\n");
  bool has_duration = false;
  for (const auto& [name, flag] : FlagsOf(*command)) {
    const std::string def = flag->DefaultValue();
    absl::StrAppend(&out, "  --", name);
    if (!def.empty()) absl::StrAppend(&out, " (default: ", def, ")");
    absl::StrAppend(&out, "\n");
    AppendWrapped(flag->Help(), 6, &out);
    has_duration = has_duration || flag->IsOfType<absl::Duration>();
  }
  if (has_duration) {
    absl::StrAppend(&out,
                    "\nDurations: 30s, 500ms, 2m, 1h30m; a bare number is seconds (5 = 5s).\n");
  }
  return out;
}

}  // namespace memserve
