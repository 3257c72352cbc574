// String options turned into compile-time constants in one place.
//
// An op's option (an activation, a blend mode, a reduce) is an X-macro list of (enumerator, name)
// entries, written `#define LIST(X, E) X(E, kNone, "none") X(E, kTanh, "tanh") ...`.
// RX_DEFINE_OPTION(Enum, LIST, "op", "argument") makes from it:
//   enum class Enum       the values, in list order;
//   option_name(Enum)     its name as the schema spells it;
//   parse_<Enum>(name)    the value of a schema string (ValueError naming the op, the argument,
//                         every allowed name and what was given);
//   dispatch(Enum, f)     calls f(std::integral_constant<Enum, value>{}): the value as a
//                         compile-time constant, the one switch every kernel family uses.
// dispatch_bool(flag, f) does the same for a run-time bool: f(std::bool_constant<flag>{}).
// Adding a value to an option is one list entry plus the formula that uses it.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <string>
#include <type_traits>

#define RX_OPTION_ENUMERATOR(E, e, name) e,
#define RX_OPTION_NAME_CASE(E, e, name) \
  case E::e:                            \
    return name;
#define RX_OPTION_PARSE(E, e, name) \
  if (value == name) return E::e;
#define RX_OPTION_LIST_NAME(E, e, name) "'" name "' "
#define RX_OPTION_DISPATCH_CASE(E, e, name) \
  case E::e:                                \
    return f(std::integral_constant<E, E::e>{});

#define RX_DEFINE_OPTION(Enum, LIST, OP, ARG)                                                    \
  enum class Enum : int { LIST(RX_OPTION_ENUMERATOR, Enum) };                                     \
  inline const char* option_name(Enum v) {                                                        \
    switch (v) { LIST(RX_OPTION_NAME_CASE, Enum) }                                                \
    return "?";                                                                                   \
  }                                                                                               \
  inline Enum parse_##Enum(c10::string_view value) {                                              \
    LIST(RX_OPTION_PARSE, Enum)                                                                   \
    TORCH_CHECK_VALUE(false, OP ": " ARG " must be one of " LIST(RX_OPTION_LIST_NAME, Enum) "got '", \
                      std::string(value), "'");                                                   \
  }                                                                                               \
  template <typename F>                                                                           \
  decltype(auto) dispatch(Enum v, F&& f) {                                                        \
    switch (v) { LIST(RX_OPTION_DISPATCH_CASE, Enum) }                                            \
    TORCH_CHECK(false, OP ": invalid " ARG " value ", static_cast<int>(v));                       \
  }

template <typename F>
decltype(auto) dispatch_bool(bool flag, F&& f) {
  if (flag) return f(std::true_type{});
  return f(std::false_type{});
}
