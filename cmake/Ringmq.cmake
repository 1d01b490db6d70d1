# ringmq_library(NAME USES layer... SYSTEM dep...): a static library made of
# the .c files of the current directory (main.c excluded).
#
# USES names the ringmq layers (folders) this one may use and SYSTEM the
# outside libraries it may use: uv raft protobuf-c lz4 yaml md zlib http-parser,
# and sockets (the BSD socket API of libc, nothing to link). The library
# links exactly those; scripts/check-layers reads the same lines and fails
# when a source file includes a header of anything not listed, so the
# CMakeLists.txt of a folder is its statement of what it may use.
function(ringmq_library name)
  cmake_parse_arguments(A "" "" "USES;SYSTEM;EXTRA" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.c)
  list(FILTER srcs EXCLUDE REGEX "/main\\.c$")
  set(links)
  foreach(layer ${A_USES})
    list(APPEND links ringmq_${layer})
  endforeach()
  foreach(dep ${A_SYSTEM})
    if(dep STREQUAL "uv")
      list(APPEND links PkgConfig::UV)
    elseif(dep STREQUAL "raft")
      list(APPEND links PkgConfig::RAFT)
    elseif(dep STREQUAL "protobuf-c")
      list(APPEND links PkgConfig::PROTOBUFC)
    elseif(dep STREQUAL "lz4")
      list(APPEND links PkgConfig::LZ4)
    elseif(dep STREQUAL "yaml")
      list(APPEND links PkgConfig::YAML)
    elseif(dep STREQUAL "md")
      list(APPEND links PkgConfig::MD)
    elseif(dep STREQUAL "zlib")
      list(APPEND links PkgConfig::ZLIB)
    elseif(dep STREQUAL "http-parser")
      list(APPEND links HttpParser::HttpParser)
    elseif(NOT dep STREQUAL "sockets")
      message(FATAL_ERROR "ringmq_library(${name}): unknown SYSTEM ${dep}")
    endif()
  endforeach()
  add_library(${name} STATIC ${srcs} ${A_EXTRA})
  target_link_libraries(${name} PUBLIC ${links})
endfunction()

# ringmq_executable(NAME SOURCES file... USES layer... SYSTEM dep...): a
# program of its own folder (tools/), stated and linked like a library.
function(ringmq_executable name)
  cmake_parse_arguments(A "" "" "SOURCES;USES;SYSTEM" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  foreach(layer ${A_USES})
    target_link_libraries(${name} ringmq_${layer})
  endforeach()
  # the outside libraries come with the layers; SYSTEM is for the check
endfunction()
