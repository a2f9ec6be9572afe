// Command lines of the form `PROGRAM COMMAND [--flag[=value] | --flag value
// | ARG]...` over absl flags, with help per command and one-line errors.
//
// absl::ParseCommandLine knows no commands: its --help lists only the flags
// of the main file, and a bad or unknown flag exits 1 in absl's own words.
// This parser keeps absl's flag registry (flags are defined with ABSL_FLAG
// and read with absl::GetFlag as usual) but decides which flags a command
// takes, what --help prints and how errors read.
#ifndef MEMSERVE_SERVER_COMMAND_LINE_H_
#define MEMSERVE_SERVER_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace memserve {

struct Subcommand {
  std::string name;      // "serve"
  std::string synopsis;  // "[--model DIR] [--listen HOST:PORT] [flags]"
  std::string summary;   // one line in the program's --help
  // The command's flags: every flag defined in one of `flag_files` (the
  // source path absl records, e.g. "server/serve.cc"), plus `flag_names`.
  std::vector<std::string> flag_files;
  std::vector<std::string> flag_names;
};

struct Program {
  std::string name;     // "memserve"
  std::string summary;  // first line of --help, after "NAME: "
  std::string footer;   // last lines of the program's --help (e.g. exit codes)
  std::vector<Subcommand> commands;
};

struct ParsedCommandLine {
  const Subcommand* command = nullptr;  // into Program::commands; null: none named
  bool help = false;                    // --help, -h, --helpfull or --helpshort
  std::vector<std::string> args;        // positional arguments after COMMAND
};

// Parses argv[1..argc): the first positional argument names the command, and
// flags may come before or after it. "--" ends the flags. A flag is
// `--name=value`, `--name value`, or for a bool `--name` / `--noname`; one
// dash works like two. A duration flag (absl::Duration) also takes a bare
// number, read as seconds ("5" = "5s").
//
// On success every flag given has been set (absl::GetFlag reads it). When
// help is asked for, no flag is set and flag errors are not reported.
// Errors are InvalidArgument with one line that names the flag or command
// and ends with where to look ("see memserve serve --help"): unknown
// command, unknown flag, a flag of another command, a missing or bad value.
//
// REQUIRES: the flags named by `program` are registered (linked in).
absl::StatusOr<ParsedCommandLine> ParseCommandLine(const Program& program, int argc, char** argv);

// The --help text: the commands when `command` is null, else the command's
// usage and each of its flags (sorted by name) with its default.
std::string HelpText(const Program& program, const Subcommand* command);

}  // namespace memserve

#endif  // MEMSERVE_SERVER_COMMAND_LINE_H_
