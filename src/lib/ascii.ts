/**
 * Lower-cases ASCII letters only. `String#toLowerCase` folds Unicode too (the Kelvin sign
 * U+212A becomes `k`, `İ` becomes `i̇`), so two different strings could compare equal after it:
 * identities and ids compared for access must not.
 */
export const asciiLowerCase = (value: string): string => value.replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
