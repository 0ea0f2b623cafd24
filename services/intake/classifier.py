"""Category classification of Chinese appeal text into the taxonomy's leaf codes.

Method (see docs/classification.md): each appeal becomes four blocks of features — the
character unigrams and bigrams of its title, those of its content, the hand-written cue words of
``CUES`` that it contains, and the character n-grams of its closing clause — each block TF-IDF
weighted (sublinear term frequency), scaled to unit length and then by its block weight. Two
one-vs-rest ridge classifiers are fitted at first use on the *train* rows of
``data/appeals_labelled.csv``: one over the leaves and one over the top levels. A leaf's score is
its own score plus ``top_level_weight`` times its top level's; both are folded into one weight
matrix, so scoring a batch of appeals is one sparse-by-dense matrix product. The best leaf wins and
gives the top level. Confidence is a softmax over the scores; below ``min_confidence`` for the top
level the answer is ``1901`` (other appeals) with the model's guess kept as the first alternative.

Deterministic (rows sorted by id before fitting, a closed-form fit, ties broken by code). Fitting
takes a fraction of a second (numpy and scipy only), so the service calls ``warm_up()`` at
start-up; prediction is a fraction of a millisecond per appeal, less in batches
(``classify_many``).

``python -m services.intake.classifier --cv`` runs 5-fold cross-validation on the train rows
(tune with it, never with the held-out rows); ``--evaluate`` scores the frozen model on the
held-out rows of ``data/appeals_heldout.csv``; ``--write-docs`` refreshes the results block of
docs/classification.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from shared import taxonomy

if TYPE_CHECKING:
    from numpy.typing import NDArray

OTHER = "1901"

# Cue words per leaf (and two per top level): what a 12345 operator recognizes at a glance.
# Each one found becomes a feature of its leaf and of its top level (the intent cues of 17 and
# 18 only up front, see ``cue_hits``). Domain knowledge, kept short and generic.
CUES: dict[str, tuple[str, ...]] = {
    "0101": (
        "人行道",
        "窨井盖",
        "井盖",
        "路面",
        "坑洼",
        "地砖",
        "天桥",
        "盲道",
        "护栏",
        "路沿石",
        "沉降",
    ),
    "0102": ("路灯", "照明", "灯不亮", "景观灯", "灯杆"),
    "0103": ("停水", "自来水", "水压", "供水", "水表", "水龙头", "二次供水", "水质"),
    "0104": (
        "积水",
        "内涝",
        "排水",
        "下水道",
        "雨水井",
        "倒灌",
        "污水井",
        "化粪池",
        "雨水篦子",
        "排涝",
    ),
    "0105": ("燃气", "天然气", "煤气", "液化气", "燃气表"),
    "0106": ("暖气", "供暖", "取暖费", "热力公司", "采暖", "供热"),
    "0107": ("物业", "物业费", "业委会", "业主大会", "物业公司"),
    "0108": ("施工", "工地", "渣土车", "打桩", "夜间施工", "扬尘", "围挡"),
    "0109": ("拆迁", "征收", "过渡费", "安置房", "强拆", "征地"),
    "0201": ("废气", "焚烧", "粉尘", "黑烟", "刺鼻", "喷漆", "烟囱"),
    "0202": ("河水", "排污", "直排", "废水", "偷排", "死鱼", "水源", "油污"),
    "0203": ("噪音", "噪声", "广场舞", "音响", "隔音", "鸣笛"),
    "0204": ("垃圾", "垃圾桶", "环卫", "公共厕所", "粪便", "清运", "垃圾分类"),
    "0205": ("油烟", "异味", "臭味", "排烟", "恶臭", "气味"),
    "0301": ("公交", "地铁", "班次", "公交车", "站台", "发车", "线路"),
    "0302": ("出租车", "网约车", "拒载", "打表", "黑车", "计价器", "绕路"),
    "0303": ("红绿灯", "信号灯", "交通标志", "标线", "绿灯", "配时", "限速", "左转"),
    "0304": ("停车", "违停", "车位", "停车场", "共享单车", "乱停", "罚单"),
    "0305": ("货车", "超载", "客车", "驾校", "客运", "班车", "汽车站", "教练"),
    "0401": ("食品", "过期", "变质", "异物", "食堂", "注水肉", "拉肚子", "吃出", "三无"),
    "0402": ("退款", "预付卡", "办卡", "跑路", "退货", "售后", "假货", "消费者"),
    "0403": ("价格", "收费标准", "明码标价", "乱收费", "涨价", "价签", "加价"),
    "0404": ("质量", "漏电", "鼓包", "不合格", "三包", "爆裂", "开胶"),
    "0405": ("无证", "没有执照", "没有证照", "无照", "没有营业执照", "没有任何资质"),
    "0501": ("工资", "欠薪", "拖欠工资", "工钱", "讨薪", "克扣"),
    "0502": ("社保", "社会保险", "失业金", "缴费基数", "工伤保险", "断缴", "失业保险"),
    "0503": ("养老金", "退休金", "退休", "资格认证", "养老保险"),
    "0504": ("就业", "创业", "招聘", "求职", "培训补贴", "就业补贴", "零工", "公益性岗位"),
    "0505": ("劳动合同", "辞退", "试用期", "调岗", "解除劳动", "竞业", "离职证明", "劳务派遣"),
    "0601": ("入学", "学区", "学位", "招生", "转学", "学籍", "幼儿园"),
    "0602": ("教辅", "学费", "校服", "赞助费", "伙食费", "补课费", "课后服务"),
    "0603": ("培训机构", "补课", "培训班", "托管班", "课时费", "补习"),
    "0604": ("校园", "欺凌", "校车", "上下学", "护校"),
    "0701": ("挂号", "医院", "医生", "看病", "门诊", "家庭医生", "卫生院", "就诊"),
    "0702": ("手术", "误诊", "医疗事故", "医美", "并发症", "病历", "鉴定"),
    "0703": ("医保", "报销", "慢特病", "异地就医", "医保卡", "医保目录"),
    "0704": ("疫苗", "疾控", "蚊子", "流感", "老鼠", "消杀", "传染", "水痘", "狂犬"),
    "0801": ("公积金",),
    "0802": ("房产证", "不动产", "产权证", "过户", "抵押", "登记中心"),
    "0803": ("租房", "房东", "押金", "租金", "二房东", "群租", "租赁", "退租"),
    "0804": ("公租房", "廉租房", "保障房", "人才公寓", "轮候", "棚改", "经济适用房"),
    "0805": ("开发商", "交房", "楼盘", "售楼", "烂尾", "商品房", "精装修"),
    "0901": ("灌溉", "水渠", "沟渠", "机埠", "山塘", "机耕路", "排灌", "闸门"),
    "0902": ("种粮", "农机", "地力保护", "农业保险", "惠农", "收购价"),
    "0903": ("承包地", "土地流转", "承包经营权", "流转", "确权", "承包合同"),
    "0904": ("养殖", "养猪场", "养鸡场", "兽药", "病死猪", "禁养区", "鱼塘", "防疫"),
    "0905": ("改厕", "农村", "村道", "村庄", "美丽乡村", "粪坑"),
    "1001": ("身份证", "户口", "落户", "居住证", "户籍", "护照", "户口本"),
    "1002": ("盗窃", "赌博", "治安", "打架", "斗殴", "被盗", "吸毒", "卖淫", "乞讨", "闹事"),
    "1003": ("诈骗", "被骗", "刷单", "转账", "骗局", "冒充"),
    "1004": ("消防", "火灾", "灭火器", "安全出口", "飞线", "消防栓", "易燃"),
    "1005": ("安全生产", "防护", "安全带", "危化品", "中毒", "采石场", "塔吊", "锅炉", "爆炸"),
    "1101": ("低保",),
    "1102": ("养老院", "养老机构", "老年食堂", "护理员", "助浴", "日间照料", "高龄津贴", "失能"),
    "1103": ("残疾", "残联", "无障碍", "轮椅", "聋哑", "手语", "盲人"),
    "1104": ("救助", "流浪", "重病", "临时救助", "受灾", "困境"),
    "1105": ("公墓", "殡仪馆", "婚姻登记", "墓", "丧葬", "结婚证", "殡葬"),
    "1201": ("违建", "违章", "私搭", "加盖", "违法建设", "阳光房", "搭建"),
    "1202": ("耕地", "闲置", "林地", "采砂", "集体土地", "占地", "用地"),
    "1203": ("规划", "日照", "采光", "规划许可", "间距", "选址"),
    "1301": ("邻居", "楼上", "对门", "隔壁", "邻里"),
    "1302": ("赡养", "离婚", "抚养费", "婆婆", "遗产", "遗嘱", "前夫", "前妻"),
    "1303": ("借条", "借钱", "欠款", "定金", "合伙", "装修款", "加盟费"),
    "1304": ("宅基地", "界址", "山林", "地界", "田界", "自留地"),
    "1305": ("工伤", "劳动争议", "经济补偿", "加班费", "包工头"),
    "1306": ("交通事故", "撞", "剐蹭", "追尾", "车祸", "定损", "肇事"),
    "1401": ("审批", "许可证", "验收", "资质", "环评", "营业执照", "备案"),
    "1402": ("扶持", "奖励", "政策兑现", "招商", "优惠", "稳岗", "退税"),
    "1403": ("工程款", "贷款", "融资", "账款", "货款", "担保", "尾款", "账期"),
    "1404": ("用电", "停电", "用水", "用气", "增容", "电价", "蒸汽"),
    "1501": ("跑了", "推诿", "窗口", "一次性告知", "超时", "来回跑", "办不成"),
    "1502": ("态度", "工作人员", "离岗", "玩手机", "好处费", "粗暴", "吃拿卡要"),
    "1503": ("信息公开", "公开", "公示", "账目", "透明"),
    "1601": ("旅行社", "导游", "景区", "民宿", "旅游", "购物点", "农家乐", "跟团"),
    "1602": ("健身器材", "图书馆", "体育馆", "篮球场", "文化礼堂", "游泳馆", "博物馆", "活动室"),
    "1701": ("咨询", "请问", "想了解", "想问", "能不能", "是否可以"),
    "1702": ("怎么办", "如何办理", "需要什么材料", "去哪里", "哪些材料", "需要带", "怎么"),
    "1801": ("建议", "增设"),
    "1802": ("表扬", "感谢", "谢谢", "感激", "值得表扬"),
    "1901": ("不属于", "聊天", "彩票", "外星人", "打错"),
    # Top-level cues: words that say which family an appeal belongs to, not which leaf.
    "13": ("纠纷", "调解", "协商不成", "谈不拢", "矛盾"),
    "14": ("企业", "我公司", "我司"),
}

_CLAUSE = re.compile(r"[，,。！？!?；;\n]")
_CLOSING = re.compile(r"[，,。！？!?；;：:\n]")
_RUN = re.compile(r"[\u4e00-\u9fff]+|[a-z0-9]+")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_INTENT = frozenset({"17", "18"})
BLOCKS = "tcqe"
"""Feature blocks by prefix letter: title, content, cues, closing clause."""
_TOKEN_OK = re.compile(r"[\u4e00-\u9fffA-Za-z]")

Appeal = tuple[str, str]
"""An appeal's ``(title, content)``."""


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    """The model's knobs; the defaults were chosen by cross-validation on the train rows."""

    title_weight: float = 1.0
    content_weight: float = 1.0
    cue_weight: float = 0.4
    closing_weight: float = 0.5
    top_level_weight: float = 1.5
    ridge_alpha: float = 1.0
    min_df: int = 2
    temperature: float = 0.2
    min_confidence: float = 0.2

    def block_weights(self) -> NDArray[np.float64]:
        """The weight of each feature block, in ``BLOCKS`` order."""
        return np.array(
            [self.title_weight, self.content_weight, self.cue_weight, self.closing_weight]
        )


@dataclass(frozen=True, slots=True)
class Alternative:
    """A candidate leaf and its probability."""

    code: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Classification:
    """The chosen leaf (or ``1901``), its top level, how sure, and the runners-up."""

    code: str
    top_level: str
    confidence: float
    top_level_confidence: float
    alternatives: tuple[Alternative, ...] = ()
    low_confidence: bool = False


_NOTHING = Classification(OTHER, OTHER[:2], 0.0, 0.0, (), low_confidence=True)


@dataclass(frozen=True, slots=True)
class LabelledAppeal:
    """One row of the labelled set."""

    id: str
    category_code: str
    split: str
    title: str
    content: str

    @property
    def top_level(self) -> str:
        """The row's top-level code."""
        return self.category_code[:2]


# --- features --------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """NFKC (full-width → half-width), lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def _ngrams(text: str, tag: str) -> list[str]:
    """Character unigrams and bigrams of each CJK run; Latin letters and digits as whole words."""
    out: list[str] = []
    for run in _RUN.findall(text):
        if _CJK.match(run):
            out.extend(tag + char for char in run)
            out.extend(tag + run[i : i + 2] for i in range(len(run) - 1))
        else:
            out.append(tag + run)
    return out


@cache
def _cue_index() -> tuple[dict[str, tuple[str, ...]], tuple[int, ...]]:
    """Cue word → the codes it is a cue for, and the distinct cue lengths (longest first)."""
    index: dict[str, list[str]] = defaultdict(list)
    for code, words in CUES.items():
        for word in words:
            index[normalize(word)].append(code)
    lengths = tuple(sorted({len(word) for word in index}, reverse=True))
    return {word: tuple(codes) for word, codes in index.items()}, lengths


def _cue_words(text: str) -> set[str]:
    """The distinct cue words occurring in already normalized text."""
    index, lengths = _cue_index()
    found: set[str] = set()
    for size in lengths:
        for start in range(len(text) - size + 1):
            piece = text[start : start + size]
            if piece in index:
                found.add(piece)
    return found


def cue_hits(title: str, content: str = "") -> dict[str, int]:
    """How many cue words of each leaf (or top level) occur in the title plus in the content.

    What the citizen *wants* (to ask, to suggest, to thank) is said up front; the intent cues of
    categories 17 and 18 count only in the title and the content's opening clause, so that a
    complaint ending "建议尽快整改" is not taken for a suggestion.
    """
    return _cue_hits(normalize(title), normalize(content))


def _cue_hits(title: str, content: str) -> dict[str, int]:
    """``cue_hits`` of already normalized text."""
    index, _ = _cue_index()
    hits: dict[str, int] = defaultdict(int)
    for word in _cue_words(title):
        for code in index[word]:
            hits[code] += 1
    if content:
        opening = _CLAUSE.split(content, maxsplit=1)[0]
        for word in _cue_words(content):
            for code in index[word]:
                if code[:2] not in _INTENT or word in opening:
                    hits[code] += 1
    return dict(hits)


def features(title: str, content: str = "") -> list[str]:
    """The features of one appeal, each prefixed by its block: ``t:`` title, ``c:`` content,
    ``q:`` cue (leaf or top-level code), ``e:`` closing clause (and ``e:?`` for a question)."""
    title_n, content_n = normalize(title), normalize(content)
    bag = _ngrams(title_n, "t:") + _ngrams(content_n, "c:")
    for code, count in sorted(_cue_hits(title_n, content_n).items()):
        bag.extend(["q:" + code] * count)
        if len(code) == 4:
            bag.extend(["q:" + code[:2]] * count)
    clauses = [part for part in _CLOSING.split(content_n) if part.strip()]
    if clauses:
        bag.extend(_ngrams(clauses[-1], "e:"))
    if "?" in content_n:
        bag.append("e:?")
    return bag


# --- the model -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LinearModel:
    """Block-weighted TF-IDF features scored by folded leaf and top-level ridge classifiers."""

    config: ClassifierConfig
    labels: tuple[str, ...]
    vocabulary: dict[str, int]
    idf: NDArray[np.float64]
    blocks: NDArray[np.intp]  # each feature's block, an index into ``BLOCKS``
    weights: NDArray[np.float64]  # (features, labels)
    bias: NDArray[np.float64]  # (labels,)
    top_of: NDArray[np.intp]  # (labels,): each leaf's top level, an index into the top levels

    @classmethod
    def train(cls, rows: Sequence[LabelledAppeal], config: ClassifierConfig) -> LinearModel:
        """Fit the leaf and top-level classifiers on labelled rows (their order does not matter)."""
        ordered = sorted(rows, key=lambda row: row.id)
        bags = [features(row.title, row.content) for row in ordered]
        frequency: Counter[str] = Counter()
        for bag in bags:
            frequency.update(set(bag))
        kept = sorted(f for f, n in frequency.items() if n >= config.min_df)
        vocabulary = {feature: i for i, feature in enumerate(kept)}
        total = len(ordered)
        idf = np.array([math.log((1 + total) / (1 + frequency[f])) + 1 for f in kept])
        blocks = np.array([BLOCKS.index(f[0]) for f in kept], dtype=np.intp)
        matrix = _matrix(bags, vocabulary, idf, blocks, config.block_weights())

        labels = tuple(sorted({row.category_code for row in ordered}))
        tops = tuple(sorted({row.top_level for row in ordered}))
        leaf_index = {label: i for i, label in enumerate(labels)}
        top_index = {top: i for i, top in enumerate(tops)}
        # One-vs-rest targets (+1 for the row's class, -1 for every other), leaves then top levels.
        targets = -np.ones((total, len(labels) + len(tops)))
        rows_at = np.arange(total)
        targets[rows_at, [leaf_index[row.category_code] for row in ordered]] = 1.0
        targets[rows_at, [len(labels) + top_index[row.top_level] for row in ordered]] = 1.0
        coef, intercept = _ridge(matrix, targets, config.ridge_alpha)
        top_of = np.array([top_index[label[:2]] for label in labels], dtype=np.intp)
        top_columns = len(labels) + top_of
        weights = coef[:, : len(labels)] + config.top_level_weight * coef[:, top_columns]
        bias = intercept[: len(labels)] + config.top_level_weight * intercept[top_columns]
        return cls(
            config=config,
            labels=labels,
            vocabulary=vocabulary,
            idf=idf,
            blocks=blocks,
            weights=np.ascontiguousarray(weights),
            bias=bias,
            top_of=top_of,
        )

    def scores(self, appeals: Sequence[Appeal]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """One row of leaf scores per appeal, and whether the appeal had any known feature."""
        bags = [features(title, content) for title, content in appeals]
        matrix = _matrix(bags, self.vocabulary, self.idf, self.blocks, self.config.block_weights())
        known = np.diff(matrix.indptr) > 0
        return np.asarray(matrix @ self.weights) + self.bias, known

    def classify_many(self, appeals: Iterable[Appeal | str]) -> list[Classification]:
        """Classify many appeals at once (a plain string is taken as the content)."""
        pairs = [("", item) if isinstance(item, str) else item for item in appeals]
        if not pairs:
            return []
        scores, known = self.scores(pairs)
        peak = scores.max(axis=1, keepdims=True)
        weights = np.exp((scores - peak) / self.config.temperature)
        probabilities = weights / weights.sum(axis=1, keepdims=True)
        top_probabilities = np.zeros((len(pairs), int(self.top_of.max()) + 1))
        np.add.at(top_probabilities.T, self.top_of, probabilities.T)
        # stable sort on -p: equal probabilities keep label (code) order
        ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :4]
        results = []
        for i, (title, content) in enumerate(pairs):
            if not known[i] or not _TOKEN_OK.search(title + content):
                results.append(_NOTHING)
                continue
            order = ranked[i]
            leaf = self.labels[order[0]]
            leaf_p = round(float(probabilities[i, order[0]]), 4)
            top_p = round(float(top_probabilities[i, self.top_of[order[0]]]), 4)
            alternatives = tuple(
                Alternative(self.labels[j], round(float(probabilities[i, j]), 4)) for j in order[1:]
            )
            if top_p < self.config.min_confidence:
                guess = (Alternative(leaf, leaf_p), *alternatives[:2])
                results.append(Classification(OTHER, OTHER[:2], leaf_p, top_p, guess, True))
            else:
                results.append(Classification(leaf, leaf[:2], leaf_p, top_p, alternatives))
        return results

    def classify(self, title: str, content: str = "") -> Classification:
        """The best leaf for one appeal, or ``1901`` when unsure (same as a batch of one)."""
        return self.classify_many([(title, content)])[0]


def _ridge(
    matrix: sparse.csr_matrix, targets: NDArray[np.float64], alpha: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Ridge regression of every target column at once, solved in its dual form.

    With far fewer rows (about a thousand) than features (about ten thousand) the dual is one
    dense ``rows × rows`` solve: ``w = Xᵀ(XXᵀ + 1 + αI)⁻¹y``, where the ``+ 1`` is a constant
    feature whose weight is the (equally regularized) intercept.
    """
    gram = (matrix @ matrix.T).toarray() + 1.0
    gram[np.diag_indices_from(gram)] += alpha
    dual = np.linalg.solve(gram, targets)
    return np.asarray(matrix.T @ dual), dual.sum(axis=0)


def _matrix(
    bags: Sequence[Sequence[str]],
    vocabulary: dict[str, int],
    idf: NDArray[np.float64],
    blocks: NDArray[np.intp],
    block_weights: NDArray[np.float64],
) -> sparse.csr_matrix:
    """Rows of block-wise sublinear TF-IDF, each block scaled to unit length times its weight.

    A row's values depend on that row alone (and are summed in the same order), so an appeal
    gets bit-for-bit the same row whether it is featurized alone or in a batch.
    """
    lookup = vocabulary.get
    columns: list[int] = []
    counts: list[int] = []
    sizes: list[int] = []
    for bag in bags:
        counted = Counter(bag)
        columns.extend([lookup(feature, -1) for feature in counted])
        counts.extend(counted.values())
        sizes.append(len(counted))
    all_columns = np.array(columns, dtype=np.intp)
    known = all_columns >= 0
    rows_at = np.repeat(np.arange(len(bags)), sizes)[known]
    cols = all_columns[known]
    values = (1.0 + np.log(np.array(counts, dtype=np.float64)[known])) * idf[cols]
    block_of = blocks[cols]
    cell = rows_at * len(block_weights) + block_of
    norms = np.sqrt(
        np.bincount(cell, weights=values * values, minlength=len(bags) * len(block_weights))
    )
    values *= block_weights[block_of] / norms[cell]
    order = np.lexsort((cols, rows_at))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows_at, minlength=len(bags)))))
    return sparse.csr_matrix(
        (values[order], cols[order].astype(np.int32), indptr),
        shape=(len(bags), len(vocabulary)),
    )


# --- data and the default model -------------------------------------------------------------

_DATA = "services.intake.data"
LABELLED_FILE = "appeals_labelled.csv"
HELDOUT_FILE = "appeals_heldout.csv"


def _data_text(name: str) -> str:
    return resources.files(_DATA).joinpath(name).read_text("utf-8")


def load_labelled(text: str | None = None) -> list[LabelledAppeal]:
    """The labelled appeals: the train file then the held-out file, unless ``text`` is given."""
    if text is None:
        return load_labelled(_data_text(LABELLED_FILE)) + load_labelled(_data_text(HELDOUT_FILE))
    rows = [LabelledAppeal(**row) for row in csv.DictReader(text.splitlines())]
    for row in rows:
        if not taxonomy.is_known(row.category_code) or not taxonomy.get(row.category_code).is_leaf:
            raise ValueError(f"{row.id}: {row.category_code!r} is not a taxonomy leaf")
        if row.split not in ("train", "heldout"):
            raise ValueError(f"{row.id}: split {row.split!r} is neither train nor heldout")
    return rows


def train_rows() -> list[LabelledAppeal]:
    """The rows the shipped model learns from (never the held-out ones)."""
    return [row for row in load_labelled() if row.split == "train"]


def heldout_rows() -> list[LabelledAppeal]:
    """The held-out rows: scored once the model is frozen, never used to tune it."""
    return [row for row in load_labelled() if row.split == "heldout"]


def heldout_digest() -> str:
    """SHA-256 of the held-out file, quoted in the docs next to the score it produced."""
    return hashlib.sha256(_data_text(HELDOUT_FILE).encode("utf-8")).hexdigest()


@cache
def default_model() -> LinearModel:
    """The model trained on the train split with the default config (built on first use)."""
    return LinearModel.train(train_rows(), ClassifierConfig())


def classify(title: str, content: str = "") -> Classification:
    """Classify an appeal's title and content into a taxonomy leaf (``1901`` when unsure)."""
    return default_model().classify(title, content)


def classify_many(appeals: Iterable[Appeal | str]) -> list[Classification]:
    """Classify many ``(title, content)`` pairs (or plain texts) at once; same answers as
    ``classify`` one by one, at a fraction of the cost per appeal."""
    return default_model().classify_many(appeals)


def warm_up() -> None:
    """Train the default model now (call at service start-up)."""
    default_model().classify("路灯不亮", "小区门口路灯坏了")


# --- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Accuracy of a model on some rows."""

    rows: int
    top_level_correct: int
    leaf_correct: int
    fell_back: int
    per_top_level: dict[str, tuple[int, int]]
    confusions: tuple[tuple[str, str, str], ...]

    @property
    def top_level_accuracy(self) -> float:
        """Share of rows whose top-level category was right."""
        return self.top_level_correct / self.rows if self.rows else 0.0

    @property
    def leaf_accuracy(self) -> float:
        """Share of rows whose leaf category was right."""
        return self.leaf_correct / self.rows if self.rows else 0.0


def _score(pairs: Iterable[tuple[LabelledAppeal, Classification]]) -> Evaluation:
    total = top_ok = leaf_ok = fell_back = 0
    per_top: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    confusions: list[tuple[str, str, str]] = []
    for row, result in pairs:
        total += 1
        per_top[row.top_level][1] += 1
        fell_back += result.low_confidence
        if result.top_level == row.top_level:
            top_ok += 1
            per_top[row.top_level][0] += 1
        else:
            confusions.append((row.id, row.category_code, result.code))
        leaf_ok += result.code == row.category_code
    return Evaluation(
        rows=total,
        top_level_correct=top_ok,
        leaf_correct=leaf_ok,
        fell_back=fell_back,
        per_top_level={k: (v[0], v[1]) for k, v in sorted(per_top.items())},
        confusions=tuple(sorted(confusions)),
    )


def evaluate(model: LinearModel, rows: Sequence[LabelledAppeal]) -> Evaluation:
    """Score the model's predictions against the labels."""
    results = model.classify_many([(row.title, row.content) for row in rows])
    return _score(zip(rows, results, strict=True))


def cross_validation(
    rows: Sequence[LabelledAppeal], config: ClassifierConfig, *, folds: int = 5
) -> Evaluation:
    """Every row scored by a model trained on the other folds (row ``i`` by id is in fold
    ``i % folds``)."""
    ordered = sorted(rows, key=lambda r: r.id)
    pairs: list[tuple[LabelledAppeal, Classification]] = []
    for k in range(folds):
        held = [r for i, r in enumerate(ordered) if i % folds == k]
        fit = [r for i, r in enumerate(ordered) if i % folds != k]
        model = LinearModel.train(fit, config)
        results = model.classify_many([(r.title, r.content) for r in held])
        pairs.extend(zip(held, results, strict=True))
    return _score(pairs)


def cross_validate(
    rows: Sequence[LabelledAppeal], config: ClassifierConfig, *, folds: int = 5
) -> tuple[float, float]:
    """Top-level and leaf accuracy over k folds of the given (train) rows."""
    result = cross_validation(rows, config, folds=folds)
    return result.top_level_accuracy, result.leaf_accuracy


@dataclass(frozen=True, slots=True)
class Cost:
    """Measured costs of the default model on this machine."""

    train_s: float
    single_ms: float
    batch_ms: float
    batch_size: int


def measure_cost(rows: Sequence[LabelledAppeal], *, batch_size: int = 1000) -> Cost:
    """Training time, and the per-appeal cost of ``classify`` and of ``classify_many``."""
    started = time.perf_counter()
    model = LinearModel.train(rows, ClassifierConfig())
    train_s = time.perf_counter() - started
    appeals = [(r.title, r.content) for r in rows]
    batch = (appeals * (batch_size // len(appeals) + 1))[:batch_size]
    model.classify_many(batch[:10])
    started = time.perf_counter()
    for title, content in batch:
        model.classify(title, content)
    single_ms = (time.perf_counter() - started) * 1000 / len(batch)
    started = time.perf_counter()
    model.classify_many(batch)
    batch_ms = (time.perf_counter() - started) * 1000 / len(batch)
    return Cost(train_s, single_ms, batch_ms, len(batch))


def results_markdown(
    result: Evaluation,
    *,
    heldout: Sequence[LabelledAppeal],
    train: int,
    cv: Evaluation,
    cost: Cost,
    digest: str,
) -> str:
    """The measured-results block of docs/classification.md."""
    names = {c.code: c.name_zh for c in taxonomy.top_levels()}
    titles = {row.id: row.title for row in heldout}
    lines = [
        f"Held-out rows: **{result.rows}** in `{HELDOUT_FILE}` (SHA-256 `{digest[:16]}`); "
        f"train rows: {train}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| top-level accuracy (held-out, scored once) | **{result.top_level_accuracy:.1%}** "
        f"({result.top_level_correct}/{result.rows}) |",
        f"| leaf accuracy (held-out, scored once) | **{result.leaf_accuracy:.1%}** "
        f"({result.leaf_correct}/{result.rows}) |",
        f"| answered 1901 for low confidence (held-out) | {result.fell_back} |",
        f"| 5-fold CV on train rows: top level / leaf | {cv.top_level_accuracy:.1%} / "
        f"{cv.leaf_accuracy:.1%} |",
        f"| training (start-up, after imports) | {cost.train_s:.2f} s |",
        f"| `classify`, per appeal | {cost.single_ms:.3f} ms |",
        f"| `classify_many` of {cost.batch_size}, per appeal | {cost.batch_ms:.3f} ms |",
        "",
        "Per top-level category (correct/total):",
        "",
        "| code | category | held-out | 5-fold CV (train) |",
        "|---|---|---|---|",
    ]
    for code, (ok, n) in result.per_top_level.items():
        cv_ok, cv_n = cv.per_top_level.get(code, (0, 0))
        lines.append(f"| {code} | {names.get(code, '?')} | {ok}/{n} | {cv_ok}/{cv_n} |")
    lines += ["", "Top-level misses (held-out): id, label → prediction, title:", ""]
    lines += [
        f"- {rid}: {label} → {pred} {titles.get(rid, '')}" for rid, label, pred in result.confusions
    ] or ["- none"]
    return "\n".join(lines)


_DOCS = Path(__file__).resolve().parents[2] / "docs" / "classification.md"
_START, _END = "<!-- results:start -->", "<!-- results:end -->"


def _write_docs(block: str) -> None:
    text = _DOCS.read_text("utf-8")
    head, _, rest = text.partition(_START)
    _, _, tail = rest.partition(_END)
    _DOCS.write_text(f"{head}{_START}\n{block}\n{_END}{tail}", "utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--cv`` (train folds), ``--evaluate`` (held-out), ``--write-docs``."""
    parser = argparse.ArgumentParser(prog="python -m services.intake.classifier")
    parser.add_argument("--cv", action="store_true", help="5-fold CV on the train rows only")
    parser.add_argument("--evaluate", action="store_true", help="accuracy on the held-out rows")
    parser.add_argument("--write-docs", action="store_true", help="update docs/classification.md")
    args = parser.parse_args(argv)
    train = train_rows()
    cv = cross_validation(train, ClassifierConfig())
    print(
        f"5-fold CV on {len(train)} train rows: top level {cv.top_level_accuracy:.1%}, "
        f"leaf {cv.leaf_accuracy:.1%}"
    )
    if not (args.evaluate or args.write_docs):
        names = {c.code: c.name_zh for c in taxonomy.top_levels()}
        for code, (ok, n) in cv.per_top_level.items():
            print(f"  {code} {names.get(code, '?')}: {ok}/{n}")
        return 0
    heldout = heldout_rows()
    result = evaluate(default_model(), heldout)
    block = results_markdown(
        result,
        heldout=heldout,
        train=len(train),
        cv=cv,
        cost=measure_cost(train),
        digest=heldout_digest(),
    )
    print(block)
    if args.write_docs:
        _write_docs(block)
        print(f"\nwrote {_DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
