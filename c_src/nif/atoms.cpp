// Makes the atoms of atoms.hpp's list.
#include "atoms.hpp"

namespace snakepit::nif {

void Atoms::init(ErlNifEnv* env) {
#define SNAKEPIT_ATOM_MAKE(field, text) field = enif_make_atom(env, text);
  SNAKEPIT_ATOMS(SNAKEPIT_ATOM_MAKE)
#undef SNAKEPIT_ATOM_MAKE
}

}  // namespace snakepit::nif
