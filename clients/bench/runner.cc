#include "clients/bench/runner.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "clients/cli/cli_lib.h"

namespace memserve {
namespace bench {
namespace {

using Clock = std::chrono::steady_clock;

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Requests in flight; the dispatcher waits on it for a slot and for the end.
class InFlight {
 public:
  void Acquire(std::optional<int> limit) {
    std::unique_lock<std::mutex> lock(mu_);
    if (limit) cv_.wait(lock, [&] { return count_ < *limit; });
    ++count_;
  }
  // Stores `record` in its slot and releases one request.
  void Release(RequestRecord* slot, RequestRecord record, Clock::time_point end) {
    std::lock_guard<std::mutex> lock(mu_);
    *slot = std::move(record);
    last_end_ = std::max(last_end_, end);
    --count_;
    cv_.notify_all();
  }
  // Gives back a slot that Acquire took for a request that is not sent.
  void Unacquire() {
    std::lock_guard<std::mutex> lock(mu_);
    --count_;
    cv_.notify_all();
  }
  // Waits until nothing is in flight; returns when the last request ended.
  Clock::time_point WaitAll() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return count_ == 0; });
    return last_end_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
  Clock::time_point last_end_ ABSL_GUARDED_BY(mu_){};
};

// One streaming Generate call. Owns itself: deleted in OnDone, after it
// handed its record to `in_flight`. gRPC runs at most one of its reactions at
// a time, so its members need no lock.
class GenerateCall : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  GenerateCall(Clock::time_point bench_start, const RunOptions& options, size_t index,
               RequestRecord* slot, InFlight* in_flight)
      : bench_start_(bench_start),
        merge_window_ms_(options.itl_merge_ms),
        slot_(slot),
        in_flight_(in_flight) {
    const BenchRequest& r = options.requests[index];
    if (r.prompt_ids.empty()) {
      request_.set_text(r.prompt);
    } else {
      request_.mutable_token_ids()->mutable_ids()->Add(r.prompt_ids.begin(), r.prompt_ids.end());
    }
    *request_.mutable_sampling() = options.sampling;
    if (r.max_tokens) request_.mutable_sampling()->set_max_tokens(*r.max_tokens);
    request_.set_request_id(absl::StrCat(options.id_prefix, index));
    if (options.timeout != absl::InfiniteDuration() && options.timeout > absl::ZeroDuration()) {
      context_.set_deadline(std::chrono::system_clock::now() +
                            absl::ToChronoNanoseconds(options.timeout));
    }
    record_.scheduled_s = options.arrival_s[index];
    record_.input_tokens = r.prompt_tokens;
  }

  void Start(v1::MemServe::Stub& stub) {
    stub.async()->Generate(&context_, &request_, this);
    StartRead(&message_);
    start_ = Clock::now();
    record_.sent_s = MsBetween(bench_start_, start_) / 1000.0;
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows with the status
    const Clock::time_point now = Clock::now();
    if (message_.has_token()) {
      arrivals_ms_.push_back(MsBetween(start_, now));
    } else if (message_.has_final()) {
      final_ = std::move(*message_.mutable_final());
      got_final_ = true;
    }
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    const Clock::time_point end = Clock::now();
    record_.e2el_ms = MsBetween(start_, end);
    record_.output_tokens = static_cast<int>(arrivals_ms_.size());
    if (!arrivals_ms_.empty()) record_.ttft_ms = arrivals_ms_.front();
    record_.itl_ms = PerTokenGaps(arrivals_ms_, merge_window_ms_);
    const double start_ms = record_.sent_s * 1000.0;
    record_.token_times_ms.reserve(arrivals_ms_.size());
    for (double t : arrivals_ms_) record_.token_times_ms.push_back(start_ms + t);
    if (!status.ok()) {
      record_.code = cli::StatusCodeName(status.error_code());
      record_.message = status.error_message();
    } else if (!got_final_) {
      record_.code = "INTERNAL";
      record_.message = "the stream ended OK without a final message";
    } else {
      record_.input_tokens = final_.usage().prompt_tokens();
      record_.finish_reason = absl::AsciiStrToLower(cli::FinishReasonName(final_.finish_reason()));
    }
    in_flight_->Release(slot_, std::move(record_), end);
    delete this;
  }

 private:
  const Clock::time_point bench_start_;
  const double merge_window_ms_;
  RequestRecord* const slot_;
  InFlight* const in_flight_;
  grpc::ClientContext context_;
  v1::GenerateRequest request_;
  v1::GenerateResponse message_;
  Clock::time_point start_;
  std::vector<double> arrivals_ms_;  // token messages, ms after start_
  v1::Final final_;
  bool got_final_ = false;
  RequestRecord record_;
};

}  // namespace

RunResult Run(v1::MemServe::Stub& stub, const RunOptions& options) {
  const size_t n = options.requests.size();
  std::vector<RequestRecord> records(n);
  InFlight in_flight;
  const Clock::time_point start = Clock::now();
  // No --duration: a stop that never comes.
  const Clock::time_point stop = options.duration > absl::ZeroDuration()
                                     ? start + std::chrono::duration_cast<Clock::duration>(
                                                   absl::ToChronoNanoseconds(options.duration))
                                     : Clock::time_point::max();
  size_t sent = 0;
  for (; sent < n; ++sent) {
    const Clock::time_point due =
        start + std::chrono::duration_cast<Clock::duration>(
                    std::chrono::duration<double>(options.arrival_s[sent]));
    if (due >= stop) break;
    std::this_thread::sleep_until(due);
    in_flight.Acquire(options.max_concurrency);
    if (Clock::now() >= stop) {
      in_flight.Unacquire();
      break;
    }
    (new GenerateCall(start, options, sent, &records[sent], &in_flight))->Start(stub);
  }
  const Clock::time_point last_end = in_flight.WaitAll();
  records.resize(sent);
  RunResult result;
  result.records = std::move(records);
  result.duration_s = sent == 0 ? 0 : MsBetween(start, last_end) / 1000.0;
  return result;
}

}  // namespace bench
}  // namespace memserve
