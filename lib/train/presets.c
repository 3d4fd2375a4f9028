/* presets.c: the paper's three cohorts as data-set presets (dataset.h): class lists, the Dyn-MoE
 * settings (E, α, expert_of_class: MEXD.md §2) and the official splits.
 *
 * Sources and decisions:
 *
 * camelyon16.  Classes (normal, tumor): normal is the negative class, so it belongs to the
 *   background expert 0 and tumor to expert 1 (MEXD.md: {normal→0, tumor→1}).  α from the
 *   authors' MOE_v3_2.py.  The split is the challenge's: training/normal/normal_001..160,
 *   training/tumor/tumor_001..111 and testing/images/test_001..130, less the two slides the
 *   CAMELYON16 release's readme says were removed: normal_086 ("originally misclassified,
 *   renamed to tumor_111") and test_049 ("duplicate slide").  That is 159 + 111 = 270 training
 *   and 129 test slides, the 399 of the release (test_114 stays: it only lacks exhaustive
 *   lesion annotations, which slide-level labels do not need).  The challenge has no val: it
 *   is carved from the 270.  A training slide's name gives its class, which the CSV's label
 *   must match; test labels come from the CSV (the release's testing/reference.csv).  (The
 *   authors' train_moe.py instead cut one CSV of theirs at row 268; the official split is used
 *   here.)
 *
 * tcga-nsclc.  Classes (LUAD, LUSC), both lesion classes: experts 1 and 2, expert 0 the
 *   background expert of E = 3 (MEXD.md: {LUAD→1, LUSC→2}); α from MOE_v3_3.py.  TCGA has no
 *   official split (the authors cut their CSV at 80 %): the CSV's split column gives it.
 *
 * bracs.  The paper's 3-class task is BRACS's three lesion groups, benign (BT: normal N,
 *   pathological benign PB, usual ductal hyperplasia UDH), atypical (AT: flat epithelial atypia
 *   FEA, atypical ductal hyperplasia ADH) and malignant (MT: ductal carcinoma in situ DCIS,
 *   invasive carcinoma IC).  E = 4 with α from MOE_v3_4.py.  expert_of_class: the authors'
 *   code does not say (its labels reach only the classifiers).  Decision: {benign→1,
 *   atypical→2, malignant→3}, expert 0 the background expert as in TCGA-NSCLC: with E = K + 1
 *   (MEXD.md) and 3 classes, E = 4 means all three classes are lesion classes with their own
 *   expert; had benign been the negative class (as Camelyon16's normal), E would be 3.
 *   The official split is the BRACS release's (its BRACS_WSI/{train,val,test}/Group_{BT,AT,MT}/Type_{N,PB,...}/
 *   tree; 395 / 65 / 87 WSIs, as the BRACS paper, arXiv 2111.04740, gives).  The per-slide
 *   list below was taken from two independent public copies that agree on all 547 slides'
 *   split and group: mahmoodlab/TANGLE dataset_csv/bracs.csv (columns split, label_coarse) and
 *   dazhangyu123/ACMIL dataset_csv/bracs.csv (paths of the
 *   release's tree).  The CSV's label must agree with the slide's group.  Labels may be the
 *   class names or BRACS's group codes (BT, AT, MT, Group_BT...) or subtypes (N, PB, UDH, FEA,
 *   ADH, DCIS, IC). */
#include "train/dataset.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

/* ---- BRACS: the official split, slide BRACS_<number>, by split and group ---- */

static const uint32_t bracs_train_bt[] = {
  745, 758, 760, 761, 1240, 1241, 1242, 1244, 1248, 1249, 1251, 1253, 1255, 1259, 1267, 1269,
  1270, 1273, 1274, 1318, 1320, 1321, 1322, 1324, 1325, 1326, 1327, 1329, 1335, 1336, 1337, 1338,
  1370, 1378, 1385, 1386, 1401, 1403, 1404, 1405, 1408, 1409, 1480, 1483, 1485, 1493, 1495, 1498,
  1507, 1508, 1511, 1513, 1581, 1582, 1583, 1593, 1594, 1596, 1603, 1604, 1605, 1606, 1612, 1617,
  1618, 1620, 1621, 1631, 1633, 1634, 1640, 1641, 1642, 1645, 1655, 1656, 1658, 1659, 1660, 1661,
  1664, 1665, 1666, 1667, 1668, 1669, 1772, 1779, 1780, 1782, 1783, 1784, 1785, 1786, 1787, 1789,
  1791, 1792, 1793, 1796, 1832, 1833, 1834, 1836, 1837, 1839, 1841, 1866, 1869, 1873, 1879, 1880,
  1881, 1890, 1893, 1900, 1901, 1902, 1904, 1905, 1914, 1917, 1918, 1924, 1946, 1948, 1949, 1957,
  1958, 1959, 1960, 1961, 1962, 1963, 1964, 1965, 1966, 1967, 1972, 1973, 1986, 1988, 1989, 1993,
  1994, 1995, 1996, 1997, 1998, 2000, 2001, 2002, 2004, 2005, 3268, 3269, 3270, 3271, 3272, 3273,
  3274, 3275, 3276, 3277, 3278, 3279, 3281, 3282, 3283, 3292, 3309, 3310, 3311, 3312, 3313, 3317,
  3334, 3335, 3336, 1003658, 1003659, 1003668, 1003669, 1003671, 1003672, 1003675, 1003685,
  1003686, 1003700, 1003705, 1003706, 1003707, 1003710, 1003713, 1003714, 1003715, 1003716,
  1003717, 1003718, 1003724, 1003725, 1003730, 1003734
};
static const uint32_t bracs_train_at[] = {
  743, 1239, 1250, 1257, 1319, 1379, 1486, 1494, 1499, 1506, 1510, 1616, 1622, 1773, 1774, 1775,
  1777, 1778, 1788, 1794, 1795, 1808, 1815, 1838, 1857, 1858, 1860, 1861, 1863, 1865, 1871, 1877,
  1882, 1899, 1911, 1912, 1913, 1915, 1916, 1922, 1925, 1926, 1932, 1933, 1934, 1968, 1969, 1971,
  1987, 3318, 1003693, 1003728
};
static const uint32_t bracs_train_mt[] = {
  280, 281, 283, 288, 291, 295, 297, 298, 311, 734, 747, 748, 749, 750, 752, 753, 754, 755, 756,
  757, 759, 762, 773, 1231, 1232, 1233, 1235, 1238, 1247, 1263, 1265, 1272, 1277, 1279, 1287,
  1288, 1289, 1292, 1293, 1356, 1357, 1358, 1360, 1369, 1374, 1406, 1407, 1477, 1478, 1484, 1487,
  1489, 1490, 1491, 1492, 1496, 1497, 1509, 1512, 1514, 1515, 1516, 1635, 1636, 1637, 1638, 1639,
  1643, 1646, 1647, 1648, 1649, 1650, 1652, 1653, 1654, 1771, 1810, 1811, 1812, 1816, 1827, 1828,
  1829, 1830, 1831, 1835, 1840, 1862, 1864, 1874, 1875, 1888, 1903, 1919, 1920, 1921, 1923, 1927,
  1928, 1929, 1930, 1931, 1947, 1950, 1970, 1984, 1999, 3289, 3290, 3291, 3293, 3294, 3305, 3308,
  3314, 3315, 3316, 3319, 3320, 3321, 1003667, 1003670, 1003673, 1003677, 1003678, 1003684,
  1003692, 1003697, 1003698, 1003699, 1003703, 1003708, 1003709, 1003721, 1003722, 1003723,
  1003727, 1003731, 1003732
};
static const uint32_t bracs_val_bt[] = {
  265, 1261, 1275, 1276, 1295, 1296, 1423, 1424, 1584, 1585, 1591, 1592, 1595, 1608, 1609, 1614,
  1632, 1974, 1978, 1979, 1980, 1981, 3284, 3295, 3296, 3298, 3300, 3337, 1003660, 1003661
};
static const uint32_t bracs_val_at[] = {
  1271, 1610, 1797, 1799, 1876, 1885, 1886, 1953, 1975, 1977, 1982, 1983, 3266, 3285
};
static const uint32_t bracs_val_mt[] = {
  735, 736, 737, 738, 739, 740, 1361, 1362, 1366, 1367, 1368, 1392, 1393, 1394, 1395, 1607, 1798,
  1883, 1935, 3301, 3302
};
static const uint32_t bracs_test_bt[] = {
  264, 1330, 1334, 1412, 1416, 1579, 1598, 1599, 1601, 1619, 1820, 1821, 1824, 1842, 1843, 1845,
  1846, 1847, 1848, 1850, 1851, 1852, 1853, 1855, 1870, 1896, 1906, 1940, 1942, 1952, 3322, 3324
};
static const uint32_t bracs_test_at[] = {
  300, 1228, 1503, 1589, 1813, 1814, 1825, 1844, 1849, 1856, 1892, 1895, 1936, 1937, 1938, 1941,
  1943, 1944, 1954, 1955, 2007, 1003691, 1003694
};
static const uint32_t bracs_test_mt[] = {
  286, 292, 301, 305, 310, 1283, 1284, 1286, 1411, 1413, 1414, 1473, 1474, 1476, 1578, 1580, 1587,
  1588, 1590, 1597, 1602, 1817, 1823, 1826, 1867, 1872, 1878, 1897, 1908, 1910, 1945, 3323
};

typedef struct {
  const uint32_t *numbers; /* ascending */
  size_t n;
  MexdSplit split;
  int klass; /* 0 benign (BT), 1 atypical (AT), 2 malignant (MT) */
} BracsGroup;

#define BRACS_GROUP(a, s, c) {a, G_N_ELEMENTS(a), s, c}
static const BracsGroup bracs_groups[] = {
  BRACS_GROUP(bracs_train_bt, MEXD_SPLIT_TRAIN, 0), BRACS_GROUP(bracs_train_at, MEXD_SPLIT_TRAIN, 1),
  BRACS_GROUP(bracs_train_mt, MEXD_SPLIT_TRAIN, 2), BRACS_GROUP(bracs_val_bt, MEXD_SPLIT_VAL, 0),
  BRACS_GROUP(bracs_val_at, MEXD_SPLIT_VAL, 1),     BRACS_GROUP(bracs_val_mt, MEXD_SPLIT_VAL, 2),
  BRACS_GROUP(bracs_test_bt, MEXD_SPLIT_TEST, 0),   BRACS_GROUP(bracs_test_at, MEXD_SPLIT_TEST, 1),
  BRACS_GROUP(bracs_test_mt, MEXD_SPLIT_TEST, 2),
};

static int cmp_u32(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* The number of "<prefix><digits>" (prefix matched without regard to ASCII case; `n_digits`
 * digits exactly, or any number >= 1 when 0), or -1. */
static int64_t name_number(const char *name, const char *prefix, int n_digits)
{
  size_t lp = strlen(prefix);
  if (g_ascii_strncasecmp(name, prefix, lp) != 0)
    return -1;
  const char *d = name + lp;
  size_t nd = strlen(d);
  if (nd == 0 || nd > 9 || (n_digits > 0 && nd != (size_t)n_digits))
    return -1;
  for (size_t i = 0; i < nd; i++)
    if (!g_ascii_isdigit(d[i]))
      return -1;
  return (int64_t)strtol(d, NULL, 10);
}

static gboolean bracs_split(const char *slide_id, MexdSplit *split, int *klass, GError **error)
{
  int64_t number = name_number(slide_id, "BRACS_", 0);
  if (number >= 0) {
    uint32_t key = (uint32_t)number;
    char canonical[32];
    g_snprintf(canonical, sizeof canonical, "%u", key);
    for (size_t g = 0; g < G_N_ELEMENTS(bracs_groups); g++) {
      const BracsGroup *bg = &bracs_groups[g];
      /* the name must be the release's: BRACS_264, not BRACS_0264 */
      if (strcmp(slide_id + 6, canonical) == 0 &&
          bsearch(&key, bg->numbers, bg->n, sizeof(uint32_t), cmp_u32)) {
        *split = bg->split;
        *klass = bg->klass;
        return TRUE;
      }
    }
  }
  return mexd_fail(error, MEXD_ERROR_NOT_FOUND,
                   "'%s' is not a WSI of the BRACS release (its 547 slides are named BRACS_<n>)",
                   slide_id);
}

/* ---- Camelyon16: the official split by name ---- */

static gboolean camelyon16_split(const char *slide_id, MexdSplit *split, int *klass,
                                 GError **error)
{
  int64_t k;
  if ((k = name_number(slide_id, "normal_", 3)) >= 0) {
    if (k == 86)
      return mexd_fail(error, MEXD_ERROR_NOT_FOUND,
                       "'%s' was removed from CAMELYON16 (misclassified; it is tumor_111 now)",
                       slide_id);
    if (k >= 1 && k <= 160) {
      *split = MEXD_SPLIT_TRAIN;
      *klass = 0;
      return TRUE;
    }
  } else if ((k = name_number(slide_id, "tumor_", 3)) >= 0) {
    if (k >= 1 && k <= 111) {
      *split = MEXD_SPLIT_TRAIN;
      *klass = 1;
      return TRUE;
    }
  } else if ((k = name_number(slide_id, "test_", 3)) >= 0) {
    if (k == 49)
      return mexd_fail(error, MEXD_ERROR_NOT_FOUND,
                       "'%s' was removed from CAMELYON16 (a duplicate slide)", slide_id);
    if (k >= 1 && k <= 130) {
      *split = MEXD_SPLIT_TEST;
      *klass = -1;
      return TRUE;
    }
  }
  return mexd_fail(error, MEXD_ERROR_NOT_FOUND,
                   "'%s' is not a CAMELYON16 slide (normal_001..160, tumor_001..111, "
                   "test_001..130)",
                   slide_id);
}

/* ---- the presets ---- */

typedef struct {
  MexdPreset p;
  const char *const *aliases; /* pairs: alias, class name; NULL-terminated */
  gboolean (*split_of)(const char *slide_id, MexdSplit *split, int *klass, GError **error);
} PresetDef;

static const char *const camelyon16_aliases[] = {
  "negative", "normal", "positive", "tumor", "metastasis", "tumor", "metastases", "tumor", NULL,
};
static const char *const nsclc_aliases[] = {
  "TCGA-LUAD", "LUAD", "TCGA-LUSC", "LUSC", "adenocarcinoma", "LUAD",
  "squamous",  "LUSC", NULL,
};
static const char *const bracs_aliases[] = {
  "BT",  "benign",    "Group_BT", "benign",    "N",    "benign",    "PB", "benign",
  "UDH", "benign",    "AT",       "atypical",  "Group_AT", "atypical", "FEA", "atypical",
  "ADH", "atypical",  "MT",       "malignant", "Group_MT", "malignant", "DCIS", "malignant",
  "IC",  "malignant", NULL,
};

static const PresetDef presets[] = {
  {{"camelyon16", 2, {"normal", "tumor", NULL}, 2, {0.25, 0.5}, {0, 1}, TRUE, FALSE},
   camelyon16_aliases,
   camelyon16_split},
  {{"tcga-nsclc", 2, {"LUAD", "LUSC", NULL}, 3, {0.25, 0.5, 0.25}, {1, 2}, FALSE, FALSE},
   nsclc_aliases,
   NULL},
  {{"bracs", 3, {"benign", "atypical", "malignant", NULL}, 4, {0.5, 0.5, 0.5, 0.25}, {1, 2, 3},
    TRUE, TRUE},
   bracs_aliases,
   bracs_split},
};

static const char *const preset_names[] = {"camelyon16", "tcga-nsclc", "bracs", NULL};

const char *const *mexd_preset_names(void)
{
  return preset_names;
}

static const PresetDef *def_of(const MexdPreset *preset)
{
  for (size_t i = 0; i < G_N_ELEMENTS(presets); i++)
    if (preset == &presets[i].p)
      return &presets[i];
  return NULL;
}

const MexdPreset *mexd_preset_lookup(const char *name, GError **error)
{
  G_STATIC_ASSERT(G_N_ELEMENTS(preset_names) == G_N_ELEMENTS(presets) + 1);
  if (name)
    for (size_t i = 0; i < G_N_ELEMENTS(presets); i++)
      if (g_ascii_strcasecmp(name, presets[i].p.name) == 0)
        return &presets[i].p;
  g_autofree char *known = g_strjoinv(", ", (char **)preset_names);
  return mexd_fail_null(error, MEXD_ERROR_NOT_FOUND, "no data set preset '%s' (known: %s)",
                        name ? name : "(null)", known);
}

int mexd_preset_class_of_label(const MexdPreset *preset, const char *label)
{
  const PresetDef *def = def_of(preset);
  if (!def || !label)
    return -1;
  for (int c = 0; c < preset->n_classes; c++)
    if (g_ascii_strcasecmp(label, preset->classes[c]) == 0)
      return c;
  for (const char *const *a = def->aliases; a && *a; a += 2)
    if (g_ascii_strcasecmp(label, a[0]) == 0)
      for (int c = 0; c < preset->n_classes; c++)
        if (strcmp(a[1], preset->classes[c]) == 0)
          return c;
  return -1;
}

gboolean mexd_preset_official_split(const MexdPreset *preset, const char *slide_id,
                                    MexdSplit *split, int *klass, GError **error)
{
  const PresetDef *def = def_of(preset);
  if (!def || !slide_id || !split || !klass)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "mexd_preset_official_split: a NULL or unknown argument");
  if (!def->split_of)
    return mexd_fail(error, MEXD_ERROR_INVALID_ARGUMENT,
                     "the %s preset has no official split (the CSV's split column gives it)",
                     preset->name);
  return def->split_of(slide_id, split, klass, error);
}
