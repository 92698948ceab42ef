// EMBAG_API: the visibility of embag's public API.
//
// The library is compiled with hidden visibility, so when a program links embag into a shared
// object of its own, only these declarations (the namespace embag of the public headers) are
// visible outside it; the runtime's internals (namespace embag::internal) never are.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
// The C++11 attribute spelling: GCC and clang both take it on a namespace (`namespace EMBAG_API
// embag`), where clang refuses the __attribute__ spelling (the sanitizer and fuzz builds use
// clang).
#define EMBAG_API [[gnu::visibility("default")]]
#else
#define EMBAG_API
#endif
