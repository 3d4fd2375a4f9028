/* placeholder, replaced by the op's implementation */
