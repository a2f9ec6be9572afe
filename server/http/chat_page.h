// The chat page served at GET / (server/http/chat.html, embedded at build
// time by the genrule in server/http/BUILD): one self-contained HTML file
// (no external assets) that streams answers from /v1/chat/completions.
#ifndef MEMSERVE_SERVER_HTTP_CHAT_PAGE_H_
#define MEMSERVE_SERVER_HTTP_CHAT_PAGE_H_

namespace memserve {

extern const char kChatPageHtml[];

}  // namespace memserve

#endif  // MEMSERVE_SERVER_HTTP_CHAT_PAGE_H_
