/*
 * Licensed to the Apache Software Foundation (ASF) under one
 * or more contributor license agreements.  See the NOTICE file
 * distributed with this work for additional information
 * regarding copyright ownership.  The ASF licenses this file
 * to you under the Apache License, Version 2.0 (the
 * "License"); you may not use this file except in compliance
 * with the License.  You may obtain a copy of the License at
 *
 *     http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS,
 * WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 * See the License for the specific language governing permissions and
 * limitations under the License.
 */

// The generator part of this file (Generator: nextPerson/nextAuction/nextBid, the id
// arithmetic, StringsGenerator, PriceGenerator, LongGenerator) is adapted from the legacy
// Nexmark generator of nexmark/nexmark commit 558d931 (= Apache Beam's), Apache-2.0.
// It is changed as weir's port (host/src/connectors/nexmark.rs) is: base time
// 2024-01-01T00:00:00Z, one generator, first event id 2, and `new Random(eventId ^ mix64(seed))`.
// The Flink job around it is this project's.

import java.io.BufferedWriter;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.functions.windowing.ProcessAllWindowFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.table.api.Schema;
import org.apache.flink.table.api.Table;
import org.apache.flink.table.api.TableDescriptor;
import org.apache.flink.table.api.bridge.java.StreamStatementSet;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * Nexmark on Flink (DataStream API), the twin of weir's jobs/nexmark queries.
 *
 * <pre>
 * usage: NexmarkFlink &lt;q0|q1|q2|q3|q4|q5|q7|q8&gt; &lt;events&gt; [event-rate=10000000] [seed=0] [discard|&lt;file&gt;] [last-watermark-ms]
 * </pre>
 *
 * In-process MiniCluster (local environment), parallelism 1, checkpoints every 1 s
 * (exactly-once, hashmap state backend, filesystem checkpoint storage). Event n (from 0) is
 * weir's event n. Watermarks: bounded out-of-orderness 4 s on the event's dateTime.
 * Each result is one line, in the format of weir's queries.rs.
 *
 * <p>Windows. A bounded source ends with the watermark +inf, so Flink fires every window at
 * the end; weir fires a window only when its watermark (max event time - 4 s - 1 ms) has
 * passed its end. In file mode (the cross-check) the job therefore drops the results of
 * windows with end - 1 > last watermark, where the last watermark is by default
 * ts(last event) - 4000 - 1 (i.e. it keeps windows with end <= max event time - 4000);
 * the optional 6th argument overrides it. In discard mode (throughput) all windows fire.
 * q4's auctions close likewise: in file mode those with expires > last watermark are dropped.
 */
public class NexmarkFlink {

    // ------------------------------------------------------------------ model (POJOs)

    /** A person who registered. */
    public static class Person {
        public long id;
        public String name;
        public String emailAddress;
        public String creditCard;
        public String city;
        public String state;
        public long dateTime;
        public String extra;

        public Person() {}
    }

    /** An item put up for auction. */
    public static class Auction {
        public long id;
        public String itemName;
        public String description;
        public long initialBid;
        public long reserve;
        public long dateTime;
        public long expires;
        public long seller;
        public long category;
        public String extra;

        public Auction() {}
    }

    /** A bid on an auction. */
    public static class Bid {
        public long auction;
        public long bidder;
        public long price;
        public long dateTime;
        public String extra;

        public Bid() {}
    }

    /** One event: exactly one of person, auction, bid is set. */
    public static class Event {
        public Person person;
        public Auction auction;
        public Bid bid;
        public long dateTime;

        public Event() {}
    }

    // ------------------------------------------------------------------ generator

    static final long BASE_TIME_MS = 1_704_067_200_000L;
    static final long PERSON_PROPORTION = 1;
    static final long AUCTION_PROPORTION = 3;
    static final long TOTAL_PROPORTION = 50;
    static final long FIRST_PERSON_ID = 1000;
    static final long FIRST_AUCTION_ID = 1000;
    static final long FIRST_CATEGORY_ID = 10;
    static final int NUM_CATEGORIES = 5;
    static final int HOT_AUCTION_RATIO = 2;
    static final int HOT_SELLERS_RATIO = 4;
    static final int HOT_BIDDERS_RATIO = 4;
    static final long NUM_ACTIVE_PEOPLE = 1000;
    static final long NUM_IN_FLIGHT_AUCTIONS = 100;
    static final long PERSON_ID_LEAD = 10;
    static final long AUCTION_ID_LEAD = 10;
    static final int AVG_PERSON_BYTES = 200;
    static final int AVG_AUCTION_BYTES = 500;
    static final int AVG_BID_BYTES = 100;

    static final String[] US_STATES = "AZ,CA,ID,OR,WA,WY".split(",");
    static final String[] US_CITIES =
            "Phoenix,Los Angeles,San Francisco,Boise,Portland,Bend,Redmond,Seattle,Kent,Cheyenne".split(",");
    static final String[] FIRST_NAMES =
            "Peter,Paul,Luke,John,Saul,Vicky,Kate,Julie,Sarah,Deiter,Walter".split(",");
    static final String[] LAST_NAMES =
            "Shultz,Abrams,Spencer,White,Bartels,Walton,Smith,Jones,Noris".split(",");

    /** weir's Generator: event n (from 0) has number n+1, id n+2, a Random(id ^ mix64(seed)). */
    public static final class Generator implements GeneratorFunction<Long, Event> {
        private final long seed;
        private final double delayUs;

        Generator(long rate, long seed) {
            this.seed = mix64(seed);
            this.delayUs = 1_000_000.0 / (double) (rate == 0 ? 10_000_000L : rate);
        }

        /**
         * SplitMix64's finalizer, as weir's nexmark.rs: the seed spread over 64 bits before it
         * is XORed into each event's Random seed. Seed 0 stays 0: the reference's events.
         */
        static long mix64(long z) {
            z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
            z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
            return z ^ (z >>> 31);
        }

        long timestamp(long number) {
            return BASE_TIME_MS + ((long) (number * delayUs)) / 1000;
        }

        @Override
        public Event map(Long n) {
            return event(n);
        }

        Event event(long n) {
            long number = n + 1;
            long id = number + 1;
            long at = timestamp(number);
            Random rng = new Random(id ^ seed);
            Event e = new Event();
            e.dateTime = at;
            long rem = id % TOTAL_PROPORTION;
            if (rem < PERSON_PROPORTION) {
                e.person = person(id, rng, at);
            } else if (rem < PERSON_PROPORTION + AUCTION_PROPORTION) {
                e.auction = auction(number, id, rng, at);
            } else {
                e.bid = bid(id, rng, at);
            }
            return e;
        }

        Auction auction(long number, long id, Random rng, long at) {
            Auction a = new Auction();
            a.id = lastBase0AuctionId(id) + FIRST_AUCTION_ID;
            long seller;
            if (rng.nextInt(HOT_SELLERS_RATIO) > 0) {
                seller = (lastBase0PersonId(id) / 100) * 100;
            } else {
                seller = nextBase0PersonId(id, rng);
            }
            a.seller = seller + FIRST_PERSON_ID;
            a.category = FIRST_CATEGORY_ID + rng.nextInt(NUM_CATEGORIES);
            a.initialBid = nextPrice(rng);
            long eventsInFlight = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
            long horizon = timestamp(number + eventsInFlight) - at;
            a.expires = at + 1 + nextLong(rng, Math.max(horizon * 2, 1L));
            a.itemName = nextString(rng, 20);
            a.description = nextString(rng, 100);
            a.reserve = a.initialBid + nextPrice(rng);
            int size = 8 + a.itemName.length() + a.description.length() + 40;
            a.extra = nextExtra(rng, size, AVG_AUCTION_BYTES);
            a.dateTime = at;
            return a;
        }
    }

    static Person person(long id, Random rng, long at) {
        Person p = new Person();
        p.id = lastBase0PersonId(id) + FIRST_PERSON_ID;
        p.name = FIRST_NAMES[rng.nextInt(FIRST_NAMES.length)] + " " + LAST_NAMES[rng.nextInt(LAST_NAMES.length)];
        p.emailAddress = nextString(rng, 7) + "@" + nextString(rng, 5) + ".com";
        StringBuilder cc = new StringBuilder(19);
        for (int i = 0; i < 4; i++) {
            if (i > 0) {
                cc.append(' ');
            }
            int d = rng.nextInt(10000); // String.format("%04d", d), without its cost
            cc.append((char) ('0' + d / 1000)).append((char) ('0' + d / 100 % 10))
                    .append((char) ('0' + d / 10 % 10)).append((char) ('0' + d % 10));
        }
        p.creditCard = cc.toString();
        p.city = US_CITIES[rng.nextInt(US_CITIES.length)];
        p.state = US_STATES[rng.nextInt(US_STATES.length)];
        int size = 8 + p.name.length() + p.emailAddress.length() + p.creditCard.length()
                + p.city.length() + p.state.length();
        p.extra = nextExtra(rng, size, AVG_PERSON_BYTES);
        p.dateTime = at;
        return p;
    }

    static Bid bid(long id, Random rng, long at) {
        Bid b = new Bid();
        long auction;
        if (rng.nextInt(HOT_AUCTION_RATIO) > 0) {
            auction = (lastBase0AuctionId(id) / 100) * 100;
        } else {
            auction = nextBase0AuctionId(id, rng);
        }
        long bidder;
        if (rng.nextInt(HOT_BIDDERS_RATIO) > 0) {
            bidder = (lastBase0PersonId(id) / 100) * 100 + 1;
        } else {
            bidder = nextBase0PersonId(id, rng);
        }
        b.auction = auction + FIRST_AUCTION_ID;
        b.bidder = bidder + FIRST_PERSON_ID;
        b.price = nextPrice(rng);
        b.extra = nextExtra(rng, 32, AVG_BID_BYTES);
        b.dateTime = at;
        return b;
    }

    static long lastBase0PersonId(long id) {
        long epoch = id / TOTAL_PROPORTION;
        long offset = id % TOTAL_PROPORTION;
        if (offset >= PERSON_PROPORTION) {
            offset = PERSON_PROPORTION - 1;
        }
        return epoch * PERSON_PROPORTION + offset;
    }

    static long lastBase0AuctionId(long id) {
        long epoch = id / TOTAL_PROPORTION;
        long offset = id % TOTAL_PROPORTION;
        if (offset < PERSON_PROPORTION) {
            epoch--;
            offset = AUCTION_PROPORTION - 1;
        } else if (offset >= PERSON_PROPORTION + AUCTION_PROPORTION) {
            offset = AUCTION_PROPORTION - 1;
        } else {
            offset -= PERSON_PROPORTION;
        }
        return epoch * AUCTION_PROPORTION + offset;
    }

    static long nextBase0PersonId(long id, Random rng) {
        long people = lastBase0PersonId(id) + 1;
        long active = Math.min(people, NUM_ACTIVE_PEOPLE);
        return people - active + nextLong(rng, active + PERSON_ID_LEAD);
    }

    static long nextBase0AuctionId(long id, Random rng) {
        long max = lastBase0AuctionId(id);
        long min = Math.max(max - NUM_IN_FLIGHT_AUCTIONS, 0);
        return min + nextLong(rng, max - min + 1 + AUCTION_ID_LEAD);
    }

    static long nextLong(Random rng, long n) {
        if (n < Integer.MAX_VALUE) {
            return rng.nextInt((int) n);
        }
        return Math.abs(rng.nextLong() % n);
    }

    static long nextPrice(Random rng) {
        return Math.round(Math.pow(10.0, rng.nextDouble() * 6.0) * 100.0);
    }

    static String nextString(Random rng, int maxLength) {
        int len = 3 + rng.nextInt(maxLength - 3);
        StringBuilder sb = new StringBuilder(len);
        while (len-- > 0) {
            if (rng.nextInt(13) == 0) {
                sb.append(' ');
            } else {
                sb.append((char) ('a' + rng.nextInt(26)));
            }
        }
        return sb.toString().trim();
    }

    static String nextExactString(Random rng, int length) {
        StringBuilder sb = new StringBuilder(length);
        int rnd = 0;
        int n = 0;
        while (length-- > 0) {
            if (n == 0) {
                rnd = rng.nextInt();
                n = 6;
            }
            sb.append((char) ('a' + rnd % 26));
            rnd /= 26;
            n--;
        }
        return sb.toString();
    }

    static String nextExtra(Random rng, int currentSize, int avg) {
        if (currentSize > avg) {
            return "";
        }
        avg -= currentSize;
        int delta = (int) Math.round(avg * 0.2);
        int minSize = avg - delta;
        int size = minSize + (delta == 0 ? 0 : rng.nextInt(2 * delta));
        return nextExactString(rng, size);
    }

    // ------------------------------------------------------------------ queries

    static final Duration WINDOW = Duration.ofSeconds(10);
    static final Duration SLIDE = Duration.ofSeconds(2);

    static String q0Line(Bid b) {
        return b.auction + "," + b.bidder + "," + b.price + "," + b.dateTime + "," + b.extra;
    }

    static String q1Line(Bid b) {
        long euroMillis = b.price * 908;
        long frac = euroMillis % 1000;
        return b.auction + "," + b.bidder + "," + (euroMillis / 1000) + "."
                + (frac < 10 ? "00" : frac < 100 ? "0" : "") + frac + "," + b.dateTime + "," + b.extra;
    }

    /**
     * q3: the unbounded inner join auction(category 10) x person(OR, ID, CA) on seller = id,
     * keyed by the person id; each pair is emitted once, when its later side arrives. As in
 * weir, a person from another state drops the auctions waiting for its id.
     */
    public static final class Q3Join extends KeyedProcessFunction<Long, Event, String> {
        private transient ValueState<Person> person;
        private transient ListState<Long> waiting;

        @Override
        public void open(OpenContext ctx) {
            person = getRuntimeContext().getState(
                    new ValueStateDescriptor<>("person", TypeInformation.of(Person.class)));
            waiting = getRuntimeContext().getListState(new ListStateDescriptor<>("auctions", Types.LONG));
        }

        @Override
        public void processElement(Event e, Context ctx, Collector<String> out) throws Exception {
            if (e.person != null) {
                Person p = e.person;
                if (!(p.state.equals("OR") || p.state.equals("ID") || p.state.equals("CA"))) {
                    waiting.clear(); // auctions waiting for a seller from elsewhere never match
                    return;
                }
                Iterable<Long> ids = waiting.get();
                if (ids != null) {
                    for (Long a : ids) {
                        out.collect(p.name + "," + p.city + "," + p.state + "," + a);
                    }
                }
                waiting.clear();
                person.update(p);
            } else {
                Person p = person.value();
                if (p != null) {
                    out.collect(p.name + "," + p.city + "," + p.state + "," + e.auction.id);
                } else {
                    waiting.add(e.auction.id);
                }
            }
        }
    }

    /** q4 stage 1 state per auction: its category, when it opened and expires, its highest bid. */
    public static class OpenAuction {
        public long category;
        public long opened;
        public long expires;
        public boolean hasBid;
        public long highest;

        public OpenAuction() {}
    }

    /** q4 stage 1 output: an auction that closed with a bid, and its winning price. */
    public static class Winner {
        public long expires;
        public long id;
        public long category;
        public long price;

        public Winner() {}
    }

    /**
     * q4 stage 1, keyed by auction id: the highest price among the bids whose dateTime is in
     * [auction.dateTime, auction.expires] (both ends included). An event-time timer at expires
     * closes the auction (watermark >= expires, as in weir). Bids for an auction not (yet) seen, or
     * already closed, are ignored; an auction without a bid emits nothing. In file mode an auction
     * with expires beyond weir's last watermark never closes there, so it is dropped.
     */
    public static final class Q4Auctions extends KeyedProcessFunction<Long, Event, Winner> {
        private final long lastWatermark;
        private transient ValueState<OpenAuction> open;

        Q4Auctions(long lastWatermark) { this.lastWatermark = lastWatermark; }

        @Override
        public void open(OpenContext ctx) {
            open = getRuntimeContext().getState(
                    new ValueStateDescriptor<>("open", TypeInformation.of(OpenAuction.class)));
        }

        @Override
        public void processElement(Event e, Context ctx, Collector<Winner> out) throws Exception {
            if (e.auction != null) {
                Auction a = e.auction;
                OpenAuction o = new OpenAuction();
                o.category = a.category;
                o.opened = a.dateTime;
                o.expires = a.expires;
                open.update(o);
                ctx.timerService().registerEventTimeTimer(a.expires);
            } else {
                OpenAuction o = open.value();
                Bid b = e.bid;
                if (o != null && o.opened <= b.dateTime && b.dateTime <= o.expires
                        && (!o.hasBid || b.price > o.highest)) {
                    o.hasBid = true;
                    o.highest = b.price;
                    open.update(o);
                }
            }
        }

        @Override
        public void onTimer(long at, OnTimerContext ctx, Collector<Winner> out) throws Exception {
            OpenAuction o = open.value();
            open.clear();
            if (o == null || !o.hasBid || at > lastWatermark) {
                return;
            }
            Winner w = new Winner();
            w.expires = o.expires;
            w.id = ctx.getCurrentKey();
            w.category = o.category;
            w.price = o.highest;
            out.collect(w);
        }
    }

    /**
     * q4 stage 2, one key (all winners): the auctions that closed at one watermark come from
     * stage 1 in timer order, which is not id order for equal expires; they wait here for the same
     * watermark (a timer at expires) and then close in (expires, id) order, as in weir. Each adds
     * its price to its category's sum and count and emits {@code category,sum/count}. The sum is a
     * long (weir's is 128-bit): prices are below 1e8, so it holds over 9e10 winning bids, and
     * addExact fails the job rather than wrap.
     */
    public static final class Q4Averages extends KeyedProcessFunction<Long, Winner, String> {
        private transient MapState<Long, List<Winner>> closing;
        private transient MapState<Long, Tuple2<Long, Long>> categories;

        @Override
        public void open(OpenContext ctx) {
            closing = getRuntimeContext().getMapState(new MapStateDescriptor<>("closing",
                    Types.LONG, Types.LIST(TypeInformation.of(Winner.class))));
            categories = getRuntimeContext().getMapState(new MapStateDescriptor<>("categories",
                    Types.LONG, Types.TUPLE(Types.LONG, Types.LONG)));
        }

        @Override
        public void processElement(Winner w, Context ctx, Collector<String> out) throws Exception {
            List<Winner> at = closing.get(w.expires);
            if (at == null) {
                at = new ArrayList<>();
                ctx.timerService().registerEventTimeTimer(w.expires);
            }
            at.add(w);
            closing.put(w.expires, at);
        }

        @Override
        public void onTimer(long at, OnTimerContext ctx, Collector<String> out) throws Exception {
            List<Winner> ws = closing.get(at);
            closing.remove(at);
            if (ws == null) {
                return;
            }
            ws.sort((x, y) -> Long.compare(x.id, y.id));
            for (Winner w : ws) {
                Tuple2<Long, Long> c = categories.get(w.category);
                if (c == null) {
                    c = Tuple2.of(0L, 0L);
                }
                c = Tuple2.of(Math.addExact(c.f0, w.price), c.f1 + 1);
                categories.put(w.category, c);
                out.collect(w.category + "," + (c.f0 / c.f1));
            }
        }
    }

    /** q5 stage 1: bids per auction per sliding window. */
    public static final class Count implements AggregateFunction<Bid, Long, Long> {
        public Long createAccumulator() { return 0L; }
        public Long add(Bid b, Long acc) { return acc + 1; }
        public Long getResult(Long acc) { return acc; }
        public Long merge(Long a, Long b) { return a + b; }
    }

    /** q5 stage 1 output: (auction, count), stamped with the window's max timestamp. */
    public static final class TagAuction extends ProcessWindowFunction<Long, Tuple2<Long, Long>, Long, TimeWindow> {
        @Override
        public void process(Long auction, Context ctx, Iterable<Long> counts, Collector<Tuple2<Long, Long>> out) {
            out.collect(Tuple2.of(auction, counts.iterator().next()));
        }
    }

    /**
     * q5 stage 2: all counts of one sliding window (a 2 s tumbling window holding end - 1):
     * the auctions with the most bids, in auction order.
     */
    public static final class HotItems extends ProcessAllWindowFunction<Tuple2<Long, Long>, String, TimeWindow> {
        private final long lastWatermark;

        HotItems(long lastWatermark) { this.lastWatermark = lastWatermark; }

        @Override
        public void process(Context ctx, Iterable<Tuple2<Long, Long>> counts, Collector<String> out) {
            if (ctx.window().maxTimestamp() > lastWatermark) {
                return;
            }
            TreeMap<Long, Long> byAuction = new TreeMap<>();
            long most = Long.MIN_VALUE;
            for (Tuple2<Long, Long> c : counts) {
                byAuction.put(c.f0, c.f1);
                most = Math.max(most, c.f1);
            }
            for (Map.Entry<Long, Long> c : byAuction.entrySet()) {
                if (c.getValue() == most) {
                    out.collect(c.getKey() + "," + c.getValue());
                }
            }
        }
    }

    /** q7: per tumbling window, the highest price and the bids at it, in arrival order. */
    public static final class Highest implements AggregateFunction<Bid, Tuple2<Long, List<Bid>>, Tuple2<Long, List<Bid>>> {
        public Tuple2<Long, List<Bid>> createAccumulator() { return Tuple2.of(Long.MIN_VALUE, new ArrayList<>()); }

        public Tuple2<Long, List<Bid>> add(Bid b, Tuple2<Long, List<Bid>> acc) {
            if (b.price > acc.f0) {
                acc.f0 = b.price;
                acc.f1.clear();
            }
            if (b.price == acc.f0) {
                acc.f1.add(b);
            }
            return acc;
        }

        public Tuple2<Long, List<Bid>> getResult(Tuple2<Long, List<Bid>> acc) { return acc; }

        public Tuple2<Long, List<Bid>> merge(Tuple2<Long, List<Bid>> a, Tuple2<Long, List<Bid>> b) {
            for (Bid x : b.f1) {
                add(x, a);
            }
            return a;
        }
    }

    public static final class HighestLines extends ProcessAllWindowFunction<Tuple2<Long, List<Bid>>, String, TimeWindow> {
        private final long lastWatermark;

        HighestLines(long lastWatermark) { this.lastWatermark = lastWatermark; }

        @Override
        public void process(Context ctx, Iterable<Tuple2<Long, List<Bid>>> in, Collector<String> out) {
            if (ctx.window().maxTimestamp() > lastWatermark) {
                return;
            }
            for (Tuple2<Long, List<Bid>> acc : in) {
                for (Bid b : acc.f1) {
                    out.collect(b.auction + "," + b.price + "," + b.bidder + "," + b.dateTime + "," + b.extra);
                }
            }
        }
    }

    /** q8 accumulator per (person id = seller, tumbling window): the person's name, whether they sold. */
    public static class NewUser {
        public String name;
        public boolean sold;

        public NewUser() {}
    }

    public static final class NewUsers implements AggregateFunction<Event, NewUser, NewUser> {
        public NewUser createAccumulator() { return new NewUser(); }

        public NewUser add(Event e, NewUser acc) {
            if (e.person != null) {
                acc.name = e.person.name;
            } else {
                acc.sold = true;
            }
            return acc;
        }

        public NewUser getResult(NewUser acc) { return acc; }

        public NewUser merge(NewUser a, NewUser b) {
            if (b.name != null) {
                a.name = b.name;
            }
            a.sold |= b.sold;
            return a;
        }
    }

    public static final class NewUserLines extends ProcessWindowFunction<NewUser, String, Long, TimeWindow> {
        private final long lastWatermark;

        NewUserLines(long lastWatermark) { this.lastWatermark = lastWatermark; }

        @Override
        public void process(Long id, Context ctx, Iterable<NewUser> in, Collector<String> out) {
            if (ctx.window().maxTimestamp() > lastWatermark) {
                return;
            }
            NewUser u = in.iterator().next();
            if (u.name != null && u.sold) {
                out.collect(id + "," + u.name + "," + ctx.window().getStart());
            }
        }
    }

    // ------------------------------------------------------------------ sinks

    /** One line per result into a file (parallelism 1; not transactional: for the cross-check). */
    public static final class LineFileSink implements Sink<String> {
        private final String path;

        LineFileSink(String path) { this.path = path; }

        @Override
        public SinkWriter<String> createWriter(WriterInitContext ctx) throws IOException {
            final BufferedWriter w = new BufferedWriter(
                    new OutputStreamWriter(new FileOutputStream(path), StandardCharsets.UTF_8), 1 << 16);
            return new SinkWriter<String>() {
                @Override
                public void write(String line, Context c) throws IOException {
                    w.write(line);
                    w.write('\n');
                }

                @Override
                public void flush(boolean endOfInput) throws IOException {
                    w.flush();
                }

                @Override
                public void close() throws IOException {
                    w.close();
                }
            };
        }
    }

    // ------------------------------------------------------------------ main

    // ------------------------------------------------------------------ SQL (as the Nexmark suite runs it)

    /**
     * The queries as nexmark/nexmark's Flink SQL states them, over views person, auction and bid
     * of one table of events (the suite's `datagen` table and views). Their results follow SQL's
     * semantics, not weir's line for line (q4 is an updating aggregate over a regular join, q7's
     * window includes its end), so they are measured, not cross-checked.
     */
    static String sqlQuery(String query) {
        switch (query) {
            case "q0": return "SELECT auction, bidder, price, `dateTime`, extra FROM bid";
            case "q1": return "SELECT auction, bidder, 0.908 * price AS price, `dateTime`, extra FROM bid";
            case "q2": return "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0";
            case "q3": return "SELECT P.name, P.city, P.state, A.id FROM auction AS A"
                    + " INNER JOIN person AS P ON A.seller = P.id"
                    + " WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')";
            case "q4": return "SELECT Q.category, AVG(Q.final) FROM ("
                    + " SELECT MAX(B.price) AS final, A.category FROM auction A, bid B"
                    + " WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires"
                    + " GROUP BY A.id, A.category) Q GROUP BY Q.category";
            case "q5": {
                String counts = "SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime"
                        + " FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"
                        + " GROUP BY auction, window_start, window_end";
                return "SELECT AuctionBids.auction, AuctionBids.num FROM (" + counts + ") AS AuctionBids"
                        + " JOIN (SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime"
                        + " FROM (" + counts + ") AS CountBids GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids"
                        + " ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime"
                        + " AND AuctionBids.num >= MaxBids.maxn";
            }
            case "q7": return "SELECT B.auction, B.price, B.bidder, B.`dateTime`, B.extra FROM bid B"
                    + " JOIN (SELECT MAX(price) AS maxprice, window_end AS `dateTime`"
                    + " FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))"
                    + " GROUP BY window_start, window_end) B1"
                    + " ON B.price = B1.maxprice"
                    + " WHERE B.`dateTime` BETWEEN B1.`dateTime` - INTERVAL '10' SECOND AND B1.`dateTime`";
            case "q8": return "SELECT P.id, P.name, P.starttime FROM ("
                    + " SELECT id, name, window_start AS starttime, window_end AS endtime"
                    + " FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))"
                    + " GROUP BY id, name, window_start, window_end) P"
                    + " JOIN (SELECT seller, window_start AS starttime, window_end AS endtime"
                    + " FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))"
                    + " GROUP BY seller, window_start, window_end) A"
                    + " ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime";
            default: return null;
        }
    }

    static LocalDateTime time(long ms) {
        return LocalDateTime.ofEpochSecond(Math.floorDiv(ms, 1000), (int) Math.floorMod(ms, 1000) * 1_000_000,
                ZoneOffset.UTC);
    }

    /** An event as a row of the suite's `datagen` table: event_type, person, auction, bid. */
    static Row row(Event e) {
        if (e.person != null) {
            Person p = e.person;
            return Row.of(0, Row.of(p.id, p.name, p.emailAddress, p.creditCard, p.city, p.state, time(p.dateTime),
                    p.extra), null, null);
        }
        if (e.auction != null) {
            Auction a = e.auction;
            return Row.of(1, null, Row.of(a.id, a.itemName, a.description, a.initialBid, a.reserve,
                    time(a.dateTime), time(a.expires), a.seller, a.category, a.extra), null);
        }
        Bid b = e.bid;
        return Row.of(2, null, null, Row.of(b.auction, b.bidder, b.price, time(b.dateTime), b.extra));
    }

    /**
     * Plans `query`'s SQL over the events into a blackhole table, as the suite does, with its
     * table settings (mini-batches of up to 50,000 rows or 2 s).
     */
    static void attachSql(StreamExecutionEnvironment env, DataStream<Event> events, String query) {
        StreamTableEnvironment tEnv = StreamTableEnvironment.create(env);
        Configuration table = tEnv.getConfig().getConfiguration();
        table.setString("table.exec.mini-batch.enabled", "true");
        table.setString("table.exec.mini-batch.allow-latency", "2s");
        table.setString("table.exec.mini-batch.size", "50000");
        table.setString("table.optimizer.distinct-agg.split.enabled", "true");
        TypeInformation<Row> rows = Types.ROW_NAMED(
                new String[] {"event_type", "person", "auction", "bid"},
                Types.INT,
                Types.ROW_NAMED(new String[] {"id", "name", "emailAddress", "creditCard", "city", "state", "dateTime",
                        "extra"}, Types.LONG, Types.STRING, Types.STRING, Types.STRING, Types.STRING, Types.STRING,
                        Types.LOCAL_DATE_TIME, Types.STRING),
                Types.ROW_NAMED(new String[] {"id", "itemName", "description", "initialBid", "reserve", "dateTime",
                        "expires", "seller", "category", "extra"}, Types.LONG, Types.STRING, Types.STRING, Types.LONG,
                        Types.LONG, Types.LOCAL_DATE_TIME, Types.LOCAL_DATE_TIME, Types.LONG, Types.LONG, Types.STRING),
                Types.ROW_NAMED(new String[] {"auction", "bidder", "price", "dateTime", "extra"}, Types.LONG,
                        Types.LONG, Types.LONG, Types.LOCAL_DATE_TIME, Types.STRING));
        Table datagen = tEnv.fromDataStream(events.map(NexmarkFlink::row).returns(rows).name("rows"),
                Schema.newBuilder()
                        .columnByExpression("dateTime", "CAST(CASE WHEN event_type = 0 THEN `person`.`dateTime`"
                                + " WHEN event_type = 1 THEN `auction`.`dateTime` ELSE `bid`.`dateTime` END"
                                + " AS TIMESTAMP(3))")
                        .watermark("dateTime", "`dateTime` - INTERVAL '4' SECOND")
                        .build());
        tEnv.createTemporaryView("datagen", datagen);
        tEnv.executeSql("CREATE TEMPORARY VIEW person AS SELECT person.id, person.name, person.emailAddress,"
                + " person.creditCard, person.city, person.state, `dateTime`, person.extra FROM datagen WHERE event_type = 0");
        tEnv.executeSql("CREATE TEMPORARY VIEW auction AS SELECT auction.id, auction.itemName, auction.description,"
                + " auction.initialBid, auction.reserve, `dateTime`, auction.expires, auction.seller, auction.category,"
                + " auction.extra FROM datagen WHERE event_type = 1");
        tEnv.executeSql("CREATE TEMPORARY VIEW bid AS SELECT bid.auction, bid.bidder, bid.price, `dateTime`, bid.extra"
                + " FROM datagen WHERE event_type = 2");
        Table result = tEnv.sqlQuery(sqlQuery(query));
        StreamStatementSet set = tEnv.createStatementSet();
        set.add(result.insertInto(TableDescriptor.forConnector("blackhole")
                .schema(Schema.newBuilder().fromResolvedSchema(result.getResolvedSchema()).build())
                .build()));
        set.attachAsDataStream();
    }

    static DataStream<Bid> bids(DataStream<Event> events) {
        return events.filter(e -> e.bid != null).map(e -> e.bid).returns(Bid.class).name("bids");
    }

    /** `query` as DataStream operators: its result lines, in the format of weir's queries.rs. */
    static DataStream<String> dataStreamLines(DataStream<Event> source, String query, long lastWatermark) {
        DataStream<String> lines;
        switch (query) {
            case "q0":
                lines = bids(source).map(NexmarkFlink::q0Line).returns(Types.STRING).name("q0");
                break;
            case "q1":
                lines = bids(source).map(NexmarkFlink::q1Line).returns(Types.STRING).name("q1");
                break;
            case "q2":
                lines = bids(source).filter(b -> b.auction % 123 == 0)
                        .map(b -> b.auction + "," + b.price).returns(Types.STRING).name("q2");
                break;
            case "q3":
                lines = source
                        .filter(e -> e.person != null || (e.auction != null && e.auction.category == 10))
                        .keyBy(e -> e.person != null ? e.person.id : e.auction.seller, Types.LONG)
                        .process(new Q3Join()).returns(Types.STRING).name("q3");
                break;
            case "q4":
                lines = source
                        .filter(e -> e.auction != null || e.bid != null)
                        .keyBy(e -> e.auction != null ? e.auction.id : e.bid.auction, Types.LONG)
                        .process(new Q4Auctions(lastWatermark)).returns(Winner.class).name("q4-auctions")
                        .keyBy(w -> 0L, Types.LONG)
                        .process(new Q4Averages()).returns(Types.STRING).name("q4-averages");
                break;
            case "q5":
                lines = bids(source)
                        .keyBy(b -> b.auction, Types.LONG)
                        .window(SlidingEventTimeWindows.of(WINDOW, SLIDE))
                        .aggregate(new Count(), new TagAuction(), Types.LONG, Types.LONG,
                                Types.TUPLE(Types.LONG, Types.LONG))
                        .name("q5-count")
                        .windowAll(TumblingEventTimeWindows.of(SLIDE))
                        .process(new HotItems(lastWatermark), Types.STRING).name("q5-max");
                break;
            case "q7": {
                TypeInformation<Tuple2<Long, List<Bid>>> acc =
                        Types.TUPLE(Types.LONG, Types.LIST(TypeInformation.of(Bid.class)));
                lines = bids(source)
                        .windowAll(TumblingEventTimeWindows.of(WINDOW))
                        .aggregate(new Highest(), new HighestLines(lastWatermark), acc, acc, Types.STRING)
                        .name("q7");
                break;
            }
            case "q8":
                lines = source
                        .filter(e -> e.person != null || e.auction != null)
                        .keyBy(e -> e.person != null ? e.person.id : e.auction.seller, Types.LONG)
                        .window(TumblingEventTimeWindows.of(WINDOW))
                        .aggregate(new NewUsers(), new NewUserLines(lastWatermark),
                                TypeInformation.of(NewUser.class), TypeInformation.of(NewUser.class), Types.STRING)
                        .name("q8");
                break;
            default:
                System.err.println("query=" + query + ": give q0, q1, q2, q3, q4, q5, q7 or q8");
                System.exit(2);
                return null;
        }
        return lines;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: NexmarkFlink <q0|q1|q2|q3|q4|q5|q7|q8> <events> [event-rate=10000000] "
                    + "[seed=0] [discard|<file>] [last-watermark-ms]   (-Dnexmark.api=datastream|sql)");
            System.exit(2);
        }
        String query = args[0];
        long events = Long.parseLong(args[1]);
        long rate = args.length > 2 ? Long.parseLong(args[2]) : 10_000_000L;
        long seed = args.length > 3 ? Long.parseUnsignedLong(args[3]) : 0L;
        String output = args.length > 4 ? args[4] : "discard";
        boolean toFile = !output.equals("discard");
        Generator generator = new Generator(rate, seed);
        // weir's last watermark: max event time - 4 s - 1 ms; windows with end - 1 beyond it do not fire there.
        long lastWatermark = !toFile ? Long.MAX_VALUE
                : args.length > 5 ? Long.parseLong(args[5])
                : generator.timestamp(events) - 4000 - 1;

        Configuration conf = new Configuration();
        conf.set(StateBackendOptions.STATE_BACKEND, "hashmap");
        // Checkpoints go to files (the JobManager's memory storage caps a state at 5 MB): the
        // directory is -Dnexmark.checkpoints (default <tmpdir>/nexmark-flink-ckpt); they are
        // deleted when the job ends. A failure fails the job (no restarts) so a broken run ends.
        String ckpt = System.getProperty("nexmark.checkpoints",
                new java.io.File(System.getProperty("java.io.tmpdir"), "nexmark-flink-ckpt").getAbsolutePath());
        conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
        conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, new java.io.File(ckpt).toURI().toString());
        conf.set(RestartStrategyOptions.RESTART_STRATEGY, "none");
        conf.set(CheckpointingOptions.CHECKPOINTING_INTERVAL, Duration.ofSeconds(1));
        conf.set(CheckpointingOptions.CHECKPOINTING_CONSISTENCY_MODE, CheckpointingMode.EXACTLY_ONCE);
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(1, conf);
        env.setParallelism(1);
        env.enableCheckpointing(1000, CheckpointingMode.EXACTLY_ONCE);

        String api = System.getProperty("nexmark.api", "datastream");
        if (!api.equals("datastream") && !api.equals("sql")) {
            System.err.println("nexmark.api=" + api + ": give -Dnexmark.api=datastream or -Dnexmark.api=sql");
            System.exit(2);
        }
        boolean sql = api.equals("sql");
        if (sql && (toFile || sqlQuery(query) == null)) {
            System.err.println("nexmark.api=sql: give q0, q1, q2, q3, q4, q5, q7 or q8, into discard"
                    + " (SQL's results are measured, not cross-checked)");
            System.exit(2);
        }
        // SQL takes its watermarks from the table's definition, as the suite's DDL gives them.
        DataStream<Event> source = env.fromSource(
                new DataGeneratorSource<>(generator, events, TypeInformation.of(Event.class)),
                sql ? WatermarkStrategy.<Event>noWatermarks()
                        : WatermarkStrategy.<Event>forBoundedOutOfOrderness(Duration.ofSeconds(4))
                                .withTimestampAssigner((e, ts) -> e.dateTime),
                "nexmark").uid("nexmark");

        if (sql) {
            attachSql(env, source, query);
        } else if (toFile) {
            dataStreamLines(source, query, lastWatermark).sinkTo(new LineFileSink(output)).name("file").uid("sink");
        } else {
            dataStreamLines(source, query, lastWatermark).sinkTo(new DiscardingSink<>()).name("discard").uid("sink");
        }

        long wallStart = System.nanoTime();
        JobExecutionResult result;
        try {
            result = env.execute("nexmark-" + query);
        } catch (Exception e) {
            e.printStackTrace();
            System.err.println("flink nexmark " + query + ": job failed: " + e);
            System.exit(1);
            return;
        }
        double wallSec = (System.nanoTime() - wallStart) / 1e9;
        double netSec = result.getNetRuntime() / 1000.0;
        System.err.printf("flink nexmark %s: %d events, job %.3f s, wall incl. MiniCluster start %.3f s%n",
                query, events, netSec, wallSec);
        System.out.println("METRIC\tflink" + (sql ? "-sql" : "") + " nexmark " + query + "\t" + Math.round(events / netSec));
    }
}
