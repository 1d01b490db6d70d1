# ringmq_library(NAME DIR_GLOB... LINK libs...): a static library made of the
# .c files of the current directory (main.c excluded), created only once the
# directory has sources, so modules can land one at a time.
function(ringmq_library name)
  cmake_parse_arguments(A "" "" "LINK" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.c)
  list(FILTER srcs EXCLUDE REGEX "/main\\.c$")
  if(srcs)
    add_library(${name} STATIC ${srcs} ${A_UNPARSED_ARGUMENTS})
    target_link_libraries(${name} PUBLIC ${A_LINK})
  endif()
endfunction()
